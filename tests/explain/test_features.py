"""Inversion, activation maximisation and the effective receptive field."""
import pytest
import torch

from cnnkit.explain import (activation_maximization, effective_receptive_field, inversion, invert_depths,
                            total_variation)
from cnnkit.models import create_model
from cnnkit.registry import CnnkitError


@pytest.fixture(scope="module")
def seed_cnn():
    torch.manual_seed(0)
    return create_model("seed_cnn", num_classes=8)


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])  # vertical diffs (1, 0), horizontal (1, 0)
    assert total_variation(x).tolist() == [pytest.approx(0.5 + 0.5)]


def test_inversion_objective_decreases_and_stays_in_range(seed_cnn):
    x = torch.rand(1, 3, 32, 32) * 2 - 1  # pixels in [0, 1] under seed_cnn's 0.5 / 0.5 normalisation
    rec, hist = inversion(seed_cnn, x[0], "features.0", steps=40)
    assert rec.shape == (3, 32, 32) and hist.shape == (40,)
    assert hist[-1] < 0.5 * hist[0] and hist[-10:].mean() < hist[:10].mean()
    assert rec.min() >= -1 - 1e-6 and rec.max() <= 1 + 1e-6


def test_invert_depths_visits_feature_info(seed_cnn):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = invert_depths(seed_cnn, x, steps=3)
    assert [r["layer"] for r in out] == [d["module"] for d in seed_cnn.feature_info]
    assert [r["reduction"] for r in out] == [1, 2, 4]
    assert all(r["reconstruction"].shape == x.shape and r["pixel_error"] > 0 for r in out)


def test_activation_maximization_increases_the_channel(seed_cnn):
    img, hist = activation_maximization(seed_cnn, "features.4", channel=7, steps=25)
    assert img.shape == (3, 32, 32) and hist.shape == (25,)
    assert hist[-5:].mean() > hist[:5].mean() > 0
    with pytest.raises(CnnkitError, match="channel"):
        activation_maximization(seed_cnn, "features.4", channel=128, steps=1)


def test_effective_receptive_field_lies_inside_the_analytic_box(seed_cnn):
    erf, box = effective_receptive_field(seed_cnn, (3, 32, 32), n=3)
    assert erf.shape == (32, 32) and erf.max() == 1
    # by hand: features.4 (stride 4, 8 x 8 grid), RF 3 -> 4 (pool) -> 8 -> 10 (pool) -> 18 px; unit (4, 4)
    # is centred on pixel 1.5 + 4 * 4 = 17.5, so it sees pixels 9..26: edges (9, 9, 27, 27)
    expected = (9, 9, 27, 27)
    ys, xs = (erf > 0).nonzero(as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == expected  # gradient nowhere outside
    if box is not None:  # the analytic box, when cnnkit.analysis can give it
        assert box == tuple(float(v) for v in expected)
    # soft: the centre weighs far more than the box's border
    assert erf[16:20, 16:20].mean() > 3 * erf[9, 9:27].mean()
