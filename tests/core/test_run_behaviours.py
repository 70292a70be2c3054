"""behaviours.json: the demo run ships the descriptions of spd_core.targets.language.BEHAVIOURS,
load_run reads them, and malformed content is refused with a message that says what is valid."""

import json
import re

import pytest

from spd_core.run import BEHAVIOURS_FILE, DEMO_RUN, check_behaviours
from spd_core.targets.language import BEHAVIOURS, MECHANISMS


def test_the_demo_run_ships_the_languages_behaviours() -> None:
    shipped = json.loads((DEMO_RUN / BEHAVIOURS_FILE).read_text())
    assert shipped == BEHAVIOURS and set(shipped) == set(MECHANISMS)
    tags = {
        json.loads(line)["mechanism"]
        for line in (DEMO_RUN / "prompts.jsonl").read_text().splitlines()
    }
    assert tags == set(shipped)


def test_load_run_reads_behaviours() -> None:
    from spd_core.run import load_run

    assert load_run("demo", light_tokenizer=True).behaviours == BEHAVIOURS


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "must map mechanism tags"),
        ({"m": {"names": []}}, "needs a 'description' string"),
        ({"m": {"description": "d", "names": "x"}}, "'names' must be a list of strings"),
        ({"m": {"description": "d", "why": 1}}, "unknown keys ['why']; valid: description, names"),
    ],
)
def test_malformed_behaviours_are_refused(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_behaviours(bad)
