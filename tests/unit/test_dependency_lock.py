"""The locks (requirements.txt, requirements-dev.txt) against what they are compiled from and
what they install: a package the venv has but the lock lacks, a pin outside the range a .in file
or pyproject.toml states, or two locks that disagree on a version each fail here, with the fix
named. Nothing here reaches a package index."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FIX = "run `make lock` (see README, 'Updating a dependency')"


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file: no comments, options or -r/-c includes."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def lock_pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in requirement_lines(path):
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line!r} is not an exact pin; {FIX}"
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


RUNTIME_LOCK = lock_pins(ROOT / "requirements.txt")
DEV_LOCK = lock_pins(ROOT / "requirements-dev.txt")


def assert_satisfied(requirement: Requirement, lock: dict[str, Version], lock_name: str, source: str) -> None:
    name = canonicalize_name(requirement.name)
    assert name in lock, f"{source} asks for {requirement.name}, which {lock_name} does not pin; {FIX}"
    assert requirement.specifier.contains(lock[name], prereleases=True), (
        f"{lock_name} pins {requirement.name}=={lock[name]}, outside {source}'s {requirement.specifier}; {FIX}"
    )


@pytest.mark.parametrize(
    ("source", "lock_name"), [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")]
)
def test_every_requirement_of_an_in_file_is_pinned_within_its_range(source: str, lock_name: str) -> None:
    lock = lock_pins(ROOT / lock_name)
    for line in requirement_lines(ROOT / source):
        assert_satisfied(Requirement(line), lock, lock_name, source)


def test_the_dev_lock_installs_the_runtime_lock_at_the_same_versions() -> None:
    for name, version in RUNTIME_LOCK.items():
        assert DEV_LOCK.get(name) == version, (
            f"requirements-dev.txt has {name}=={DEV_LOCK.get(name)}, not {version}; {FIX}"
        )


def test_the_packages_ranges_in_pyproject_admit_the_locked_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    for line in declared:
        assert_satisfied(Requirement(line), RUNTIME_LOCK, "requirements.txt", "pyproject.toml")


def test_the_pinned_torch_accepts_the_cpu_build() -> None:
    """The lock pins torch without its local label, so the CPU build (2.13.0+cpu) satisfies it."""
    (line,) = (line for line in requirement_lines(ROOT / "requirements.txt") if line.startswith("torch=="))
    assert Requirement(line).specifier.contains("2.13.0+cpu")


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="runs only in the repo's own .venv"
)
def test_everything_the_venv_has_is_in_the_dev_lock_at_its_version() -> None:
    project_name = canonicalize_name(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"])
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        if name == project_name:
            continue
        installed = Version(distribution.version)
        assert name in DEV_LOCK, (
            f"the venv has {name} {installed}, which requirements-dev.txt lacks: add it to requirements-dev.in "
            f"and {FIX}, or `pip uninstall {name}`"
        )
        assert installed.public == DEV_LOCK[name].public, (
            f"the venv has {name} {installed}, the lock {DEV_LOCK[name]}: `make -B .venv/.dev` reinstalls the lock"
        )
