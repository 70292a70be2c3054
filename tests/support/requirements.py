"""Skip-or-fail for tests that need an external system: skip locally, fail in CI where it is
required."""

import os

import pytest


def required(env_var: str) -> bool:
    """True when `env_var` is set to anything but "" or "0" (CI sets it so a broken install never
    skips)."""
    return os.environ.get(env_var, "") not in ("", "0")


def unavailable(env_var: str, reason: str) -> None:
    """Fails the test with `reason` when `env_var` requires the system, else skips it."""
    if required(env_var):
        pytest.fail(f"{reason} ({env_var} is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{reason} (set {env_var}=1 to make this a failure)")
