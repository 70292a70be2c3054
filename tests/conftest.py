import os
import random

import pytest
import torch

pytest_plugins = [
    "tests.support.slurm",
    "tests.support.node_tools",
    "tests.support.tiny_run",
    "tests.support.chromium",
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup` (the Makefile's test command): a module's tests run
    on one worker, so its module fixtures (a trained model, a finished investigation) are built
    once; the tests that use the one SLURM cluster share a worker, so their jobs do not queue behind
    each other's."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        fixtures = getattr(item, "fixturenames", ())
        group = "slurm" if "slurm_cluster" in fixtures else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
