"""Inversion, activation maximisation and the effective receptive field (against boxes worked by hand)."""
import pytest
import torch

from cnnkit.explain import (activation_maximization, effective_receptive_field, erf_extent, inversion,
                            invert_depths, total_variation)
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


def test_erf_of_a_conv_stack_stays_in_the_box_worked_by_hand():
    # conv3 (s1) -> conv3 (s2) -> conv3 (dilation 2): RF 3, then 3 + 2 * 1 = 5 (jump 2), then 5 + (5 - 1) * 2 = 13.
    # On 24 px the last map is 12 x 12; its centre unit (6, 6) is centred on pixel 0 + 6 * 2 = 12 and sees
    # pixels 6..18: box edges (6, 6, 19, 19). Gradients cannot reach outside it, and do reach its corners.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    erf, box = effective_receptive_field(net, (1, 24, 24), layer="4", n=4)
    assert box == (6.0, 6.0, 19.0, 19.0)
    inside = torch.zeros(24, 24, dtype=torch.bool)
    inside[6:19, 6:19] = True
    assert (erf[~inside] == 0).all() and (erf[inside] > 0).float().mean() > 0.5
    assert erf[6, 6] > 0 and erf[18, 18] > 0  # the dilated kernel's outer taps reach the box corners
    # the same with real images instead of noise, and the ERF extent measure
    erf2, box2 = effective_receptive_field(net, layer="4", x=torch.rand(2, 1, 24, 24))
    assert box2 == box and (erf2[~inside] == 0).all()
    assert erf_extent(erf) <= 13 and erf_extent(torch.ones(24, 24)) == 24


def test_activation_maximization_of_several_channels_at_once(seed_cnn):
    imgs, hist = activation_maximization(seed_cnn, "features.4", channel=[3, 7], steps=20)
    assert imgs.shape == (2, 3, 32, 32) and hist.shape == (20, 2)
    assert (hist[-5:].mean(0) > hist[:5].mean(0)).all()
    with pytest.raises(CnnkitError, match="channel"):
        activation_maximization(seed_cnn, "features.4", channel=[0, 500], steps=1)
