"""The installed dependencies are the locked ones (requirements/*.txt, written by `make lock`):
every package the lock pins is installed at exactly its pinned version. Packages the lock holds
only to build edgerob itself (hatchling and what it needs) may be absent where edgerob was
installed another way."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REQUIREMENTS = Path(__file__).parents[1] / "requirements"
LOCKS = ("host.txt", "no-deps.txt")  # what make install installs
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, list[str], int]]:
    """{package: (version, [what needs it], number of hashes)} from pip-compile's output (its
    "# via" notes)."""
    pins: dict[str, tuple[str, list[str], int]] = {}
    name = None
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            name = canonical(m[1])
            pins[name] = (m[2], [], 0)
        if name and "--hash=sha256:" in line:
            pins[name] = (*pins[name][:2], pins[name][2] + line.count("--hash=sha256:"))
        elif name and (via := re.match(r"^\s+#\s+(?:via\s+)?(?:-\s+)?(\S.*)$", line)):
            if via[1] != "via":
                pins[name][1].append(via[1])
    return pins


def build_only(pins: dict) -> set[str]:
    """Packages needed only by the build backend: via build-system, or via other such packages."""
    only = {n for n, (_, via, _) in pins.items() if via and all("build-system" in v for v in via)}
    while True:
        more = {n for n, (_, via, _) in pins.items()
                if n not in only and via
                and all("build-system" in v or canonical(v.split()[0]) in only for v in via)}
        if not more:
            return only
        only |= more


def test_the_lock_is_complete_and_hashed():
    pins = read_lock(REQUIREMENTS / "host.txt")
    assert pins["torch"][0].endswith("+cpu")  # never PyPI's CUDA build
    for name in ("numpy", "onnxruntime", "sqlalchemy", "alembic", "pytest", "lifelines",
                 "hatchling"):
        assert name in pins
    for lock in LOCKS:
        locked = read_lock(REQUIREMENTS / lock)
        assert locked and not [n for n, (_, _, hashes) in locked.items() if not hashes]
    assert build_only(pins) >= {"hatchling", "editables", "trove-classifiers"}
    assert "packaging" not in build_only(pins)  # onnxruntime, optuna ... import it too


@pytest.mark.parametrize("lock", LOCKS)
def test_installed_versions_are_the_locked_ones(lock):
    pins = read_lock(REQUIREMENTS / lock)
    optional = build_only(pins)
    wrong = []
    for name, (pinned, _, _) in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            if name not in optional:
                wrong.append(f"{name} missing (locked {pinned})")
            continue
        if installed != pinned:
            wrong.append(f"{name} {installed} (locked {pinned})")
    assert not wrong, "not the locked set (run make install): " + ", ".join(wrong)


def test_the_lock_satisfies_pyproject():
    """Every dependency pyproject.toml names for the locked extras is pinned, at a version its
    range allows: a dependency added or narrowed without `make lock` fails here."""
    project = tomllib.loads((REQUIREMENTS.parent / "pyproject.toml").read_text())["project"]
    pins = {**read_lock(REQUIREMENTS / "host.txt"), **read_lock(REQUIREMENTS / "no-deps.txt")}
    wanted = [*project["dependencies"], *project["optional-dependencies"]["host"],
              *project["optional-dependencies"]["dev"]]
    stale = [r for r in map(Requirement, wanted)
             if canonical(r.name) not in pins
             or not r.specifier.contains(pins[canonical(r.name)][0], prereleases=True)]
    assert not stale, f"requirements/ is out of date with pyproject.toml (make lock): {stale}"
