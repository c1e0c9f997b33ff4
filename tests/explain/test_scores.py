"""Localisation and faithfulness scores: hand-computed pointing game and energy, deletion / insertion
curves on a toy model whose exact curve is known, and the shapes-world evaluation."""
import math

import pytest
import torch
from torch import nn

from cnnkit.data.shapes import render_scene
from cnnkit.explain import (blur, deletion_insertion, energy_in_mask, evaluate_localization, pointing_game,
                            pointing_hits)
from cnnkit.models import create_model
from cnnkit.registry import CnnkitError


def test_pointing_game_by_hand():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True  # the object: the central 2 x 2 block
    heat = torch.zeros(3, 4, 4)
    heat[0, 1, 2] = 1.0  # inside
    heat[1, 0, 0] = 1.0  # corner: outside
    heat[1, 2, 2] = 0.9
    heat[2, 2, 1] = 0.5  # inside
    assert pointing_hits(heat, masks).tolist() == [True, False, True]
    assert pointing_game(heat, masks) == pytest.approx(2 / 3)
    assert pointing_game(heat, masks, tolerance=1) == 1.0  # the corner touches the grown mask
    assert pointing_game(masks.float(), masks) == 1.0


def test_energy_in_mask_by_hand():
    masks = torch.zeros(2, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    heat = torch.tensor([[[3.0, 1.0], [0.0, -5.0]],  # positive energy 4, inside 3 -> 0.75
                         [[0.0, 2.0], [2.0, 0.0]]])  # 0 of 4 inside -> 0
    assert energy_in_mask(heat, masks) == pytest.approx((0.75 + 0.0) / 2)
    assert energy_in_mask(torch.zeros(1, 2, 2), masks[:1]) == 0.0  # no energy: scores 0
    with pytest.raises(CnnkitError):
        energy_in_mask(heat, masks[:, :1])


class RegionScorer(nn.Module):
    """Toy classifier on (B, 1, 8, 8): logit_0 = 4 * mean of the top-left 4 x 4 region, logit_1 = 0."""

    def forward(self, x):
        s = 4 * x[:, 0, :4, :4].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_deletion_insertion_perfect_vs_random():
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1.0
    heat = torch.zeros(1, 8, 8)
    heat[0, :4, :4] = 1.0 + torch.arange(16.0).view(4, 4) / 100  # the region first, in a fixed order
    res = deletion_insertion(RegionScorer(), x, heat, target=0, steps=64, deletion_substrate="zero",
                             insertion_substrate="zero")
    # one pixel per step: after k deletions min(k, 16) region pixels are gone
    k = torch.arange(65.0)
    left = (16 - k.clamp(max=16)) / 16
    torch.testing.assert_close(res["deletion"][0], torch.sigmoid(4 * left))
    torch.testing.assert_close(res["insertion"][0], torch.sigmoid(4 * (1 - left)))
    assert res["deletion"].shape == res["random_deletion"].shape == (1, 65)
    assert res["deletion_auc"][0] < res["random_deletion_auc"][0] - 0.1
    assert res["insertion_auc"][0] > res["random_insertion_auc"][0] + 0.1
    # AUC of the exact curve by the trapezoid rule
    auc = torch.trapezoid(torch.sigmoid(4 * left), k / 64)
    assert float(res["deletion_auc"][0]) == pytest.approx(float(auc), rel=1e-5)
    # endpoints: the untouched image and the fully replaced one
    assert float(res["random_deletion"][0, 0]) == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    assert float(res["random_deletion"][0, -1]) == pytest.approx(0.5)


def test_blur_keeps_flat_images_and_the_mean():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(blur(flat), flat)
    x = torch.rand(2, 1, 16, 16)
    b = blur(x)
    assert b.shape == x.shape and b.std() < x.std()


def test_scene_masks_point_at_themselves():
    s = render_scene(0, 3, size=32, channels=3, num_objects=1)
    m = s.masks[:1]
    assert pointing_game(m.float(), m) == 1.0 and energy_in_mask(m.float(), m) == 1.0


def test_evaluate_localization_runs_and_checks_its_model():
    torch.manual_seed(0)
    model = create_model("seed_cnn", num_classes=8)
    res = evaluate_localization(model, n=4, size=32, method="gradcam", curves=True, steps=4, batch_size=4)
    for key in ("pointing_game", "energy_in_mask", "mask_fraction", "accuracy", "deletion_auc",
                "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["n"] == 4 and 0 < res["mask_fraction"] < 0.5
    centre = evaluate_localization(model, n=4, size=32, method="center")
    assert centre["mask_fraction"] == pytest.approx(res["mask_fraction"])
    with pytest.raises(CnnkitError, match="Did you mean 'gradcam'"):
        evaluate_localization(model, n=2, method="gradcamm")
    with pytest.raises(CnnkitError, match="8 shapes classes"):
        evaluate_localization(create_model("seed_cnn", num_classes=10), n=2, size=32)
    assert math.isfinite(res["energy_in_mask"])
