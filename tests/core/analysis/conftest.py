"""Fixtures for the analysis tests."""

import pytest
import torch

from spd_core.model import ComponentModel
from tests.core.analysis.tiny_models import tiny_llama


@pytest.fixture(scope="module")
def llama() -> ComponentModel:
    return tiny_llama()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 48, (1, 10), generator=torch.Generator().manual_seed(1))
