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
