import pytest

TINY = dict(data="shapes", num_train=256, num_val=64, image_size=16, epochs=2, batch_size=64, quiet=True)


@pytest.fixture
def tiny(tmp_path):
    """Options for a training run of a couple of seconds, inside a temporary project folder."""
    return dict(TINY, project=str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One small trained run shared by the eval / predict / CLI tests."""
    import cnnkit

    project = tmp_path_factory.mktemp("shared_runs")
    return cnnkit.train(**dict(TINY, project=str(project), name="shared"), log=lambda *a, **k: None)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a machine shared with other jobs OpenMP's
    spinning threads make each op many times slower; the count is given back after the module.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
