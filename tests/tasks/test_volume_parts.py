"""The parts of planned volume segmentation that need no data set: nnU-Net's U-Net, the sliding window,
the losses in 3-D, the patch sampler, the 3-D augmentation and the evaluator (against torchmetrics)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import create_model
from cnnkit.data.patches import IGNORE, CaseSplit, PatchSplit, PreparedCase, crop, foreground_positions
from cnnkit.data.volume_augment import VolumeAugment
from cnnkit.registry import CnnkitError
from cnnkit.tasks import create_task
from cnnkit.tasks.segment import dice_loss
from cnnkit.tasks.volume import gaussian_importance, sliding_window, window_starts

PLAN = dict(dims=3, patch_size=[8, 16, 16], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], base_features=4, max_features=16, batch_size=2,
            deep_supervision=True)


pytestmark = pytest.mark.usefixtures("one_thread")


def conv_params(cin, cout, k):
    return cin * cout * int(np.prod(k)) + cout


def test_plan_unet_shapes_and_parameter_count():
    m = create_model("plan_unet", num_classes=3, in_chans=2, strides=PLAN["strides"],
                     kernel_sizes=PLAN["kernel_sizes"], base_features=4, max_features=6)
    assert m.widths == [4, 6, 6] and m.divisor == (2, 4, 4)
    # by hand: encoder stages, transposed convs, decoder stages, one 1x1 head per decoder stage
    w, ks, st = m.widths, PLAN["kernel_sizes"], PLAN["strides"]
    enc = sum(conv_params(c_in, c, k) + 2 * c + conv_params(c, c, k) + 2 * c
              for c_in, c, k in zip([2] + w[:-1], w, ks))
    up = sum(w[i + 1] * w[i] * int(np.prod(st[i + 1])) + w[i] for i in range(2))
    dec = sum(conv_params(2 * w[i], w[i], ks[i]) + 2 * w[i] + conv_params(w[i], w[i], ks[i]) + 2 * w[i]
              for i in range(2))
    heads = sum(w[i] * 3 + 3 for i in range(2))
    assert sum(p.numel() for p in m.parameters()) == enc + up + dec + heads
    x = torch.randn(2, 2, 8, 16, 16)
    outs = m(x)  # training: deep supervision, finest first, without the coarsest decoder stage
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 16, 16)]
    m4 = create_model("plan_unet", num_classes=3, strides=[1, 2, 2, 2], base_features=4)
    assert [tuple(o.shape[2:]) for o in m4(torch.randn(1, 1, 16, 16, 16))] == [(16, 16, 16), (8, 8, 8)]
    m.eval()
    assert m(torch.randn(1, 2, 7, 13, 18)).shape == (1, 3, 7, 13, 18)  # padded to the divisor, cropped back
    with pytest.raises(CnnkitError, match="takes"):
        m(torch.randn(1, 2, 16, 16))
    m2 = create_model("plan_unet", dims=2, strides=[1, 2, 2], num_classes=2).eval()
    assert m2(torch.randn(1, 1, 20, 24)).shape == (1, 2, 20, 24) and m2.widths == [32, 64, 128]
    with pytest.raises(CnnkitError, match="first stage"):
        create_model("plan_unet", strides=[2, 2])


def test_gaussian_and_windows():
    g = gaussian_importance((5, 9))
    assert float(g.max()) == 1.0 and float(g.min()) > 0 and torch.equal(g, g.flip(0)) and torch.equal(g, g.flip(1))
    assert g[2, 4] == 1.0 and g[0, 0] < g[1, 1] < g[2, 4]
    for size, patch in ((40, 16), (16, 16), (17, 16), (100, 32)):
        s = window_starts(size, patch)
        assert s[0] == 0 and s[-1] == size - patch and all(b - a <= patch // 2 + 1 for a, b in zip(s, s[1:]))
    assert window_starts(10, 16) == [0]


def test_sliding_window_equals_a_pointwise_model_on_the_whole_case():
    """A 1x1x1 conv gives the same logits in every window: the weighted average must be exactly them,
    also where the case is smaller than the patch (padded) and with mirroring."""
    m = torch.nn.Conv3d(2, 3, 1)
    for shape in ((1, 2, 13, 40, 37), (1, 2, 5, 9, 30)):
        x = torch.randn(shape)
        with torch.no_grad():
            want = m(x)
            assert torch.allclose(sliding_window(m, x, (8, 16, 16), 3), want, atol=1e-5)
            assert torch.allclose(sliding_window(m, x, (8, 16, 16), 3, mirror=True), want, atol=1e-5)


def test_sliding_window_weights_centres_over_borders():
    """A model that marks window borders: with Gaussian weights the border values count less than with flat ones."""
    class Border(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 1, *x.shape[2:])
            out[..., :2] = 1.0
            out[..., -2:] = 1.0
            return out

    x = torch.zeros(1, 1, 4, 4, 40)
    flat = sliding_window(Border(), x, (4, 4, 16), 1, gaussian=False)
    gauss = sliding_window(Border(), x, (4, 4, 16), 1)
    assert float(gauss[..., 4:-4].mean()) < float(flat[..., 4:-4].mean())


def test_dice_loss_in_3d_matches_the_flattened_2d_one():
    logits, target = torch.randn(2, 3, 4, 6, 5), torch.randint(0, 3, (2, 4, 6, 5), dtype=torch.uint8)
    target[0, 0, 0, 0] = IGNORE
    flat = dice_loss(logits.flatten(3), target.flatten(2))
    assert torch.allclose(dice_loss(logits, target), flat)
    # without the background: by hand over classes 1 and 2
    valid = target != IGNORE
    p = logits.softmax(1) * valid[:, None]
    t = F.one_hot(torch.where(valid, target.long(), 0), 3).movedim(-1, 1).float() * valid[:, None]
    axes = (0, 2, 3, 4)
    d = (2 * (p * t).sum(axes) + 1e-5) / (p.sum(axes) + t.sum(axes) + 1e-5)
    assert torch.allclose(dice_loss(logits, target, include_background=False), 1 - d[1:].mean())


def _case(seed=0, shape=(6, 20, 18), fg=True):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    if fg:
        label[2:4, 5:9, 6:10] = 1
        label[1:3, 12:15, 2:5] = 2
    image = (rng.normal(size=(1, *shape)) + label[None]).astype(np.float32)
    return PreparedCase(f"case{seed}", image, label, foreground_positions(label, 3))


def test_crop_pads_image_with_zero_and_label_with_ignore():
    c = _case()
    img, lab = crop(c.image, c.label, np.array([-2, 15, 0]), (4, 8, 8))
    assert img.shape == (1, 4, 8, 8) and lab.shape == (4, 8, 8)
    assert (lab[:2] == IGNORE).all() and (img[:, :2] == 0).all() and (lab[:, 5:] == IGNORE).all()
    np.testing.assert_array_equal(lab[2:, :5], c.label[0:2, 15:20, 0:8])


def test_patch_loader_is_deterministic_and_oversamples_foreground():
    cases = [_case(i) for i in range(3)]
    split = PatchSplit(cases, (4, 8, 8), per_epoch=60)
    loader = split.make_loader(3, True, True, "cpu", seed=1)
    assert len(loader) == 20
    a = [(x.clone(), y.clone()) for x, y in loader]
    again = [(x, y) for x, y in loader]
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, again))
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], a[0][0])
    x, y = a[0]
    assert x.shape == (3, 1, 4, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.uint8
    # the last patch of every batch is centred on foreground: it always holds some
    assert all(bool(((yy[-1] > 0) & (yy[-1] != IGNORE)).any()) for _, yy in a)
    # 2-D patches from the same volumes: a slice, then a crop
    two = PatchSplit(cases, (8, 8), per_epoch=6).make_loader(3, True, True, "cpu", seed=0)
    x2, y2 = next(iter(two))
    assert x2.shape == (3, 1, 8, 8) and y2.shape == (3, 8, 8)


def test_case_loader_splits_cases_over_ranks():
    cases = [_case(i) for i in range(5)]
    loaders = [CaseSplit(cases).make_loader(1, False, False, "cpu", 0, rank=r, world_size=2) for r in range(2)]
    names = [[c.name for _, c in ld] for ld in loaders]
    assert names == [["case0", "case1", "case2"], ["case3", "case4"]]
    x, c = next(iter(loaders[0]))
    assert x.shape == (1, 1, 6, 20, 18)


def test_volume_augment_moves_labels_with_the_voxels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 16, 16)
    y = torch.randint(0, 3, (4, 8, 16, 16), dtype=torch.uint8)
    off = VolumeAugment({})
    assert not off.active
    # mirroring only: each sample's image is flipped along some axes, and its label along the same ones
    from itertools import combinations

    x3, y3 = VolumeAugment(dict(mirror=dict(axes=["z", "y", "x"], p=0.5)))(x, y, g)
    combos = [list(c) for r in range(4) for c in combinations((0, 1, 2), r)]
    for i in range(4):
        axes = next(c for c in combos if torch.equal(x3[i, 0], x[i, 0].flip(c) if c else x[i, 0]))
        assert torch.equal(y3[i], y[i].flip(axes) if axes else y[i])
    # a label that is a function of the image stays that function under rotation and scaling (nearest vs
    # bilinear differ only at borders); the image-only transforms leave the label alone
    img = torch.zeros(2, 1, 8, 24, 24)
    img[:, :, 2:6, 6:18, 6:18] = 1.0
    lab = (img[:, 0] > 0.5).to(torch.uint8)
    spatial = dict(rotation=dict(p=1.0, about_z=[-30, 30], about_y=[-10, 10], about_x=[-10, 10]),
                   scale=dict(p=1.0, range=[0.8, 1.2]))
    xa, ya = VolumeAugment(spatial)(img, lab, g)
    inside = ya != IGNORE
    assert float(((xa[:, 0] > 0.5) == (ya == 1))[inside].float().mean()) > 0.97
    assert set(torch.unique(ya).tolist()) <= {0, 1, IGNORE} and not torch.equal(xa, img)
    every = dict(noise=dict(p=1.0, variance=[0.0, 0.1]), blur=dict(p=1.0, sigma=[0.5, 1.0]),
                 brightness=dict(p=1.0, range=[0.75, 1.25]), contrast=dict(p=1.0, range=[0.75, 1.25]),
                 low_resolution=dict(p=1.0, zoom=[0.5, 1.0], axes=["y", "x"]),
                 gamma=dict(p=1.0, range=[0.7, 1.5], invert_p=0.5))
    xb, yb = VolumeAugment(every)(img, lab, g)
    assert torch.equal(yb, lab) and torch.isfinite(xb).all() and not torch.equal(xb, img)
    with pytest.raises(CnnkitError, match="rotation"):
        VolumeAugment(dict(rotaton=dict(p=0.1)))
    with pytest.raises(CnnkitError, match="elastic"):
        VolumeAugment(dict(elastic=True))


def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter

    from cnnkit.data.volume_augment import gaussian_blur

    x = torch.rand(2, 1, 6, 11, 9)
    out = gaussian_blur(x, torch.tensor([1.0, 0.6]), [0, 1, 2])
    # both samples use the batch's kernel radius, ceil(3 * 1.0) = 3: scipy's truncate gives the same radius
    for i, (s, truncate) in enumerate(((1.0, 3.0), (0.6, 5.0))):
        ref = gaussian_filter(x[i, 0].numpy(), s, mode="nearest", truncate=truncate)
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-6)
    in_plane = gaussian_blur(x, torch.tensor([1.0, 1.0]), [1, 2])  # "dummy 2-D": slices stay apart
    np.testing.assert_allclose(in_plane[0, 0, 3].numpy(), gaussian_filter(x[0, 0, 3].numpy(), 1.0, mode="nearest",
                                                                          truncate=3.0), atol=1e-6)


def test_volume_evaluator_dice_equals_torchmetrics_f1_on_the_voxels():
    from torchmetrics.functional.classification import multiclass_f1_score

    task = create_task("volume", ["background", "a", "b"], plan=PLAN)
    ev = task.evaluator("cpu")
    preds, truths = [], []
    for i in range(3):
        c = _case(i)
        logits = torch.randn(1, 3, *c.label.shape)
        logits[0, 1][torch.from_numpy(c.label == 1)] += 2.0  # mostly right
        ev.update(logits, c)
        preds.append(logits.argmax(1).flatten())
        truths.append(torch.from_numpy(c.label).long().flatten())
    res = ev.compute()
    f1 = multiclass_f1_score(torch.cat(preds), torch.cat(truths), 3, average=None)
    assert res["dice"] == pytest.approx(float(f1[1:].mean()), abs=1e-6)
    assert res["dice_per_class"]["a"] == pytest.approx(float(f1[1]), abs=1e-6)
    assert len(res["case_dice_each"]) == 3 and 0 <= res["case_dice"] <= 1 and res["loss"] > 0


def test_volume_task_options_and_deep_supervision_loss():
    with pytest.raises(CnnkitError, match="plan"):
        create_task("volume", ["background", "a"])
    with pytest.raises(CnnkitError, match="patches_per_epoch"):
        create_task("volume", ["background", "a"], plan=PLAN, patches_per_epch=3)
    task = create_task("volume", ["background", "a", "b"], plan=PLAN)
    m = create_model("plan_unet", **task.model_kwargs())
    x, y = torch.randn(2, 1, 8, 16, 16), torch.randint(0, 3, (2, 8, 16, 16), dtype=torch.uint8)
    loss, stats = task.train_step(m, x, y)
    loss.backward()
    assert torch.isfinite(loss) and stats == {}
    # every parameter learns but the coarsest decoder stage's head, which deep supervision leaves out (as nnU-Net)
    assert all((p.grad is not None) != n.startswith("seg.0.") for n, p in m.named_parameters())
