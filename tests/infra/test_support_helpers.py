"""The test-support helpers themselves: bounded calls, skip-or-fail switches, pinned tool
versions."""

import re
import threading

import pytest

from tests.support.node_tools import pinned_versions
from tests.support.requirements import required
from tests.support.slurm import bounded


def test_bounded_returns_the_value_of_a_quick_call() -> None:
    assert bounded(lambda: 6 * 7, timeout_s=5) == 42


def test_bounded_reraises_the_calls_exception() -> None:
    def boom() -> None:
        raise ValueError("from the call")

    with pytest.raises(ValueError, match="from the call"):
        bounded(boom, timeout_s=5)


def test_bounded_gives_up_on_a_hanging_call() -> None:
    release = threading.Event()
    with pytest.raises(TimeoutError, match="did not return within 0.2 s"):
        bounded(release.wait, timeout_s=0.2)
    release.set()


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)]
)
def test_required_is_set_unless_empty_or_zero(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("SPD_MCP_REQUIRE_SOMETHING", raising=False)
    else:
        monkeypatch.setenv("SPD_MCP_REQUIRE_SOMETHING", value)
    assert required("SPD_MCP_REQUIRE_SOMETHING") is expected


def test_node_tool_pins_are_exact_versions() -> None:
    pins = pinned_versions()
    assert set(pins) == {"claude-code", "inspector"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pins.values()), pins
