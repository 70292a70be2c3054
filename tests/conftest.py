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
