"""requirements.lock pins every dependency pyproject asks for, and the environment under test is the
lock's."""

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, sep, version = line.partition("==")
            assert sep, f"lock line {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def _wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
    ]


def test_the_lock_satisfies_every_requirement_of_pyproject() -> None:
    pins = _locked()
    for req in _wanted():
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        )
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject's "
            f"{req.specifier}: run `make lock`"
        )
    assert pins["torch"].startswith("2.13.0"), (
        f"torch must stay 2.13.0, the lock has {pins['torch']}"
    )


def test_the_installed_environment_is_the_locked_one() -> None:
    for name, version in _locked().items():
        installed = metadata.version(name)
        assert installed == version, (
            f"{name} {installed} is installed but the lock says {version}: run `make install`"
        )
