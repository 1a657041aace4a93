"""bench/vector_realism.py's estimators on data whose dimension is known by construction: points
spread uniformly in a d-dimensional subspace of 384 dimensions. No benchmark figure is asserted."""

from __future__ import annotations

import numpy as np
import pytest

from bench.vector_realism import geometry, lid_mle, neighbour_distances, two_nn
from embeddings import normalize_rows


def points_in_subspace(count: int, dimension: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((384, dimension)))[0].T
    return (rng.random((count, dimension)) @ basis).astype(np.float32)


@pytest.mark.parametrize("dimension", [2, 5, 10])
def test_the_estimators_find_a_subspace_dimension(dimension: int) -> None:
    data = points_in_subspace(4000, dimension)
    sample = np.arange(500)
    # Euclidean distances of unit vectors are what the module measures: rescale so that the
    # points are unit but keep their subspace (a cube beside the origin, projected on the sphere).
    shifted = normalize_rows(data * 0.5 + normalize_rows(np.ones((1, 384), np.float32)))
    nearest, _, _, _ = neighbour_distances(shifted[sample], shifted, 20, sample)
    assert np.median(lid_mle(nearest, 20)) == pytest.approx(dimension, rel=0.25)
    assert two_nn(nearest) == pytest.approx(dimension, rel=0.3)


def test_a_point_is_not_its_own_neighbour_and_exact_duplicates_are_counted_apart() -> None:
    data = normalize_rows(np.random.default_rng(1).standard_normal((300, 384)).astype(np.float32))
    data = np.concatenate([data, data[:10]])  # ten products share another's text
    report = geometry("with duplicates", data, sample=310)
    assert report.duplicate_share == pytest.approx(20 / 310, abs=1e-3)
    assert report.cosine_to_nn_median < 0.5  # the duplicates were not taken as neighbours
    assert report.lid_mle_k10_median > 50  # an isotropic cloud: every dimension is used
