"""The server reads the demo run's probe suite (prompts.jsonl rows carry `target`)."""

from types import SimpleNamespace

from spd_mcp.server.state import served_from_loaded


def test_probe_rows_with_target_key_keep_their_target(lm) -> None:
    loaded = SimpleNamespace(
        model=lm.model,
        tokenizer=lm.tokenizer,
        path=None,
        metrics={},
        target_spec=None,
        probes=[{"text": "the cat sat", "target": "on", "mechanism": "m", "foil": "in"}],
    )
    served = served_from_loaded(loaded)
    assert [(p.text, p.target_token, p.mechanism) for p in served.probes] == [
        ("the cat sat", "on", "m")
    ]
