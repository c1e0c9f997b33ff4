"""Localisation and faithfulness scores: hand-computed pointing game and energy, deletion / insertion
curves on a toy model whose exact curve is known, and the shapes-world evaluation."""
import math

import pytest
import torch
from torch import nn

from cnnkit.data.shapes import render_scene
from cnnkit.explain import (blur, deletion_insertion, energy_in_mask, evaluate_localization, evaluate_methods,
                            object_region, pointing_chance, pointing_game, pointing_hits)
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


def test_coarse_maps_are_scored_on_their_own_grid():
    # an 8 x 8 image, object = pixels (rows 1-2, cols 5-6): on a 2 x 2 grid of 4 x 4 cells it lies in the
    # top-right cell only
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 1:3, 5:7] = True
    heat = torch.zeros(2, 2, 2)
    heat[0, 0, 1] = 1.0  # top-right cell: holds the object -> hit
    heat[1, 1, 1] = 1.0  # bottom-right cell: does not -> miss
    assert pointing_hits(heat, masks).tolist() == [True, False]
    # bilinear upsampling would put the peak at the cell centre (3.5, 5.5), pixels (3..4, 5..6): off the object
    up = torch.nn.functional.interpolate(heat[:1, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert pointing_game(up, masks[:1]) == 0.0 and pointing_game(heat[:1], masks[:1]) == 1.0
    # energy: a cell's energy counts by the share of its 16 pixels in the mask: 4 / 16
    assert energy_in_mask(heat[:1], masks[:1]) == pytest.approx(4 / 16)
    assert pointing_chance(masks, (2, 2)) == pytest.approx(1 / 4)  # one cell of four holds the object
    assert pointing_chance(masks) == pytest.approx(4 / 64)
    with pytest.raises(CnnkitError):
        pointing_hits(torch.zeros(2, 16, 16), masks)  # a map finer than its mask


def test_object_region_adds_the_outline():
    m = torch.zeros(1, 5, 5, dtype=torch.bool)
    m[0, 2, 2] = True
    assert object_region(m, 0).sum() == 1 and object_region(m, 1).sum() == 9  # the pixel and its 8 neighbours
    heat = torch.zeros(1, 5, 5)
    heat[0, 1, 3] = 1.0  # diagonal neighbour: on the outline
    assert pointing_game(heat, m) == 0.0 and pointing_game(heat, m, tolerance=1) == 1.0


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
    # a random order removes region pixels in proportion: logit 4 (1 - f), expected AUC
    # int_0^1 sigmoid(4 f) df = (log(1 + e^4) - log 2) / 4 = 0.831 for both curves; the saliency order
    # gives 0.583 (deletion) and 0.944 (insertion)
    expected = (math.log1p(math.exp(4)) - math.log(2)) / 4
    assert abs(float(res["random_deletion_auc"][0]) - expected) < 0.07
    assert abs(float(res["random_insertion_auc"][0]) - expected) < 0.07
    assert res["deletion_auc"][0] < res["random_deletion_auc"][0] - 0.15
    assert res["insertion_auc"][0] > res["random_insertion_auc"][0] + 0.05
    # AUC of the exact curve by the trapezoid rule
    auc = torch.trapezoid(torch.sigmoid(4 * left), k / 64)
    assert float(res["deletion_auc"][0]) == pytest.approx(float(auc), rel=1e-5)
    # endpoints: the untouched image and the fully replaced one
    assert float(res["random_deletion"][0, 0]) == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    assert float(res["random_deletion"][0, -1]) == pytest.approx(0.5)


def test_equal_saliency_is_removed_in_random_order():
    # A flat map says nothing about order, so it must score like the random baseline (0.831 expected, see
    # above), not like a row-by-row sweep, which erases the top-left region by 28 / 64 pixels (AUC ~0.69).
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1.0
    res = deletion_insertion(RegionScorer(), x, torch.ones(1, 8, 8), target=0, steps=64, deletion_substrate="zero",
                             insertion_substrate="zero", random_baseline=False)
    expected = (math.log1p(math.exp(4)) - math.log(2)) / 4
    assert abs(float(res["deletion_auc"][0]) - expected) < 0.07


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


def test_evaluate_methods_scores_every_method_on_the_same_scenes():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=8)  # max-pool head: CAM is only the approximation
    res = evaluate_methods(model, ["cam", "gradcam++", "guided_gradcam"], n=3, steps=2, batch_size=2)
    assert list(res["methods"]) == ["cam", "gradcam_pp", "guided_gradcam"] and res["n"] == 3
    assert res["methods"]["gradcam_pp"]["map"] == "4x4 layer3"
    assert res["methods"]["guided_gradcam"]["map"] == "32x32 pixels"
    assert "not global-average-pool" in res["methods"]["cam"]["note"]
    for scores in list(res["methods"].values()) + [res["baseline"]]:
        for k in ("pointing_game", "pointing_chance", "energy_in_mask", "energy_uniform"):
            assert 0.0 <= scores[k] <= 1.0, k
    for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert 0.0 <= res["methods"]["gradcam_pp"][k] <= 1.0
    # CAM behind the max pool is Grad-CAM at the last stage: identical scores
    assert res["methods"]["cam"]["pointing_game"] == evaluate_methods(model, ["gradcam"], n=3, curves=False)[
        "methods"]["gradcam"]["pointing_game"]
    # the chance level of a 4 x 4 grid is above that of single pixels; the uniform energy is the region's share
    assert res["methods"]["gradcam_pp"]["pointing_chance"] > res["methods"]["guided_gradcam"]["pointing_chance"]
    assert res["methods"]["cam"]["energy_uniform"] == pytest.approx(res["mask_fraction"])
    vit = create_model("vit_tiny", num_classes=8, small_input=True, depth=1)
    assert "tokens" in evaluate_methods(vit, ["cam"], n=1, curves=False)["methods"]["cam"]["error"]
