"""The job body submitted to a real single-node SLURM cluster through the launcher's SlurmExecutor.

Needs `tests/support/slurm.py` (its `slurm_cluster` fixture brings the cluster up and points
SLURM_CONF at it); skipped where that support module is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("support.slurm")
from conftest import STANDIN  # noqa: E402
from support.fake_messages_api import FakeMessagesAPI, ToolCall, Turn  # noqa: E402
from support.slurm import slurm_cluster  # noqa: E402, F401  (fixture)

from spd_mcp.launcher.detect import slurm_answers  # noqa: E402
from spd_mcp.launcher.events import read_events  # noqa: E402
from spd_mcp.launcher.layout import InvestigationDir, read_json  # noqa: E402
from spd_mcp.launcher.spec import Environment, LaunchRequest, SlurmResources, resolve  # noqa: E402
from spd_mcp.launcher.submit import submit  # noqa: E402

pytestmark = pytest.mark.slow


def test_job_runs_under_slurm(slurm_cluster, tmp_path: Path, api_env) -> None:  # noqa: F811
    ok, note = slurm_answers()
    assert ok, f"the slurm_cluster fixture is up but SLURM does not answer: {note}"
    script = [Turn(tool_calls=(ToolCall("run_prompt", {"text": "under slurm"}),)), Turn(text="Done.")]
    with FakeMessagesAPI(script) as api:
        api_env(api.url)
        env = Environment(api_key_set=True, slurm_available=True, slurm_note=note)
        req = LaunchRequest(question="Q?", agent="anthropic_api", executor="slurm", out=str(tmp_path / "runs"),
                            slurm=SlurmResources(time="0:10:00", cpus=1), server_argv=STANDIN)
        spec = resolve(req, env)
        job = submit(spec)
        outcome = job.result()
    assert outcome["ok"] and outcome["status"] == "completed", outcome
    inv = InvestigationDir(Path(spec.inv_dir))
    meta = read_json(inv.metadata)
    assert meta["executor"] == "slurm" and meta["job_ids"] == [str(job.job_id)]
    kinds = [e["kind"] for e in read_events(inv.events)]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished" and "server_stopped" in kinds
