"""A/B experiments: arms that rank with different RankingConfig values, each taking a share of
the users, read from a JSON file (`demo_server.py --experiment FILE`):

    {"name": "session-blend-2025-06",
     "min_users_per_arm": 200,
     "arms": [{"name": "control", "share": 0.5, "config": {}},
              {"name": "no-session", "share": 0.5, "config": {"session_weight": 0.0}}]}

`config` holds RankingConfig fields to change from the defaults. The first arm is the control the
others are compared with. A user's arm is a hash of the experiment's name and the user id, so it
is the same on every request, in every worker and after a restart, and a new experiment (a new
name) deals the users afresh. No state is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranking import RankingConfig

# Arm and experiment names become metric labels and show in `why`: short, plain words.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
SHARE_TOLERANCE = 1e-9
DEFAULT_MIN_USERS_PER_ARM = 100
CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(RankingConfig))
FILE_KEYS = {"name", "arms", "min_users_per_arm"}
ARM_KEYS = {"name", "share", "config"}
# The arm label of lists made when no experiment runs.
NO_ARM = "none"


class ExperimentFileError(ValueError):
    """An experiment file the server cannot run; the message names the problem and the fix."""


@dataclass(frozen=True)
class Arm:
    name: str
    share: float
    config: RankingConfig


@dataclass(frozen=True)
class Experiment:
    """Arms with shares summing to 1 (checked by parse_experiment); arms[0] is the control."""

    name: str
    arms: tuple[Arm, ...]
    min_users_per_arm: int = DEFAULT_MIN_USERS_PER_ARM

    def arm_for(self, user_id: str) -> Arm:
        """The user's arm: the first whose cumulative share exceeds the user's point in [0, 1)."""
        point = bucket_point(self.name, user_id)
        total = 0.0
        for arm in self.arms:
            total += arm.share
            if point < total:
                return arm
        return self.arms[-1]  # shares summing to 1 - 1e-12 leave a sliver: it is the last arm's


def bucket_point(experiment: str, user_id: str) -> float:
    """A uniform point in [0, 1) from SHA-256 of the experiment's name and the user id: the same
    in every process (Python's hash() is salted per process), independent between experiments."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def load_experiment(path: Path) -> Experiment:
    """The experiment in a JSON file; ExperimentFileError names what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExperimentFileError(f"cannot read the experiment file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ExperimentFileError(f"the experiment file {path} is not valid JSON: {exc}") from None
    try:
        return parse_experiment(data)
    except ExperimentFileError as exc:
        raise ExperimentFileError(f"experiment file {path}: {exc}") from None


def parse_experiment(data: Any) -> Experiment:
    """The experiment a JSON document describes, checked whole: nothing runs from a bad file."""
    if not isinstance(data, Mapping):
        raise ExperimentFileError('it must hold a JSON object with "name" and "arms"')
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ExperimentFileError(f"unknown key(s) {unknown}; an experiment has {sorted(FILE_KEYS)}")
    name = parse_name(data.get("name"), "the experiment's name")
    min_users = data.get("min_users_per_arm", DEFAULT_MIN_USERS_PER_ARM)
    if isinstance(min_users, bool) or not isinstance(min_users, int) or min_users < 1:
        raise ExperimentFileError(f"min_users_per_arm must be a whole number of at least 1, got {min_users!r}")
    arms_data = data.get("arms")
    if not isinstance(arms_data, Sequence) or isinstance(arms_data, str) or len(arms_data) < 2:
        raise ExperimentFileError('"arms" must be a list of at least two arms (the first is the control)')
    arms = tuple(parse_arm(arm, number) for number, arm in enumerate(arms_data, 1))
    names = [arm.name for arm in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExperimentFileError(f"arm names must differ; repeated: {duplicates}")
    total = math.fsum(arm.share for arm in arms)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ExperimentFileError(
            f"the arms' shares must sum to 1, got {total:g} ({' + '.join(str(arm.share) for arm in arms)})"
        )
    return Experiment(name, arms, min_users)


def parse_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ExperimentFileError(
            f"{what} must be 1-40 letters, digits, '_', '.' or '-' (starting with a letter or digit), got {value!r}"
        )
    return value


def parse_arm(data: Any, number: int) -> Arm:
    if not isinstance(data, Mapping):
        raise ExperimentFileError(f'arm {number} must be an object with "name", "share" and "config"')
    unknown = sorted(set(data) - ARM_KEYS)
    if unknown:
        raise ExperimentFileError(f"arm {number}: unknown key(s) {unknown}; an arm has {sorted(ARM_KEYS)}")
    name = parse_name(data.get("name"), f"arm {number}'s name")
    share = data.get("share")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not (0 < share <= 1):
        raise ExperimentFileError(f"arm {name!r}: share must be a number above 0 and at most 1, got {share!r}")
    config_data = data.get("config", {})
    if not isinstance(config_data, Mapping):
        raise ExperimentFileError(f"arm {name!r}: config must be an object of RankingConfig fields")
    unknown_fields = sorted(set(config_data) - set(CONFIG_FIELDS))
    if unknown_fields:
        raise ExperimentFileError(
            f"arm {name!r}: unknown RankingConfig field(s) {unknown_fields}; the fields are {', '.join(CONFIG_FIELDS)}"
        )
    try:
        config = RankingConfig(**config_data)
    except (TypeError, ValueError) as exc:
        raise ExperimentFileError(f"arm {name!r}: {exc}") from None
    return Arm(name, float(share), config)
