import pytest

from tests.server.runs import lm_run, toy_run


@pytest.fixture(scope="session")
def lm():
    return lm_run()


@pytest.fixture(scope="session")
def toy():
    return toy_run()


@pytest.fixture
def anyio_backend():
    return "asyncio"
