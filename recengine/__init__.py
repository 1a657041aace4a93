"""Internals of the recommender: see README's layout section."""
