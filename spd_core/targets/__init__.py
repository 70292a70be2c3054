"""Toy targets and the demo language model, with the data they are trained and decomposed on."""

from typing import Any


def corpus_for_run(run: Any, n: int | None = None) -> list[str]:
    """The texts a language-model run was decomposed on (see ``spec.corpus_texts``)."""
    from spd_core.targets.spec import corpus_texts

    return corpus_texts(run.target_spec, n)
