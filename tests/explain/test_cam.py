"""CAM family: shapes on small registered models, the CAM = Grad-CAM identity on a GAP -> linear head,
heads where CAM does not apply, and guided backprop against an autograd oracle."""
import copy

import pytest
import torch
from torch import nn

from cnnkit.explain import (cam, feature_maps, filters, gradcam, gradcam_pp, guided_backprop, guided_gradcam,
                            layercam, resolve_layer)
from cnnkit.models import create_model
from cnnkit.registry import CnnkitError

SMALL = ["seed_cnn", "fastnet", "lenet5_modern"]


def build(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=8, in_chans=3, **kwargs)


def inplace_flags(model):
    return [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]


@pytest.mark.parametrize("name", SMALL)
def test_output_shapes_and_state_restored(name):
    model = build(name)
    model.train()  # the methods switch to eval and must switch back
    flags = inplace_flags(model)
    x = torch.randn(2, 3, 32, 32)
    for fn in (gradcam, gradcam_pp):
        m = fn(model, x)
        assert m.shape == (2, 32, 32)
        assert m.min() >= 0 and torch.allclose(m.flatten(1).amax(1)[m.flatten(1).amax(1) > 0], torch.tensor(1.0))
    assert gradcam(model, x, upsample=False, normalize=False).shape[-2:] == feature_maps(model, x).shape[-2:]
    assert guided_backprop(model, x).shape == x.shape
    assert guided_gradcam(model, x, target=1).shape == x.shape
    info = model.feature_info[-1]
    fm = feature_maps(model, x[0])
    assert fm.shape == (info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])
    w = filters(model)
    assert w.shape == model.get_submodule(model.default_cfg["first_conv"]).weight.shape
    assert w.min() >= 0 and w.max() <= 1
    assert model.training and all(m.training for m in model.modules())
    assert inplace_flags(model) == flags and any(flags) == (name != "lenet5_modern")  # in-place ReLUs come back
    assert all(not m._forward_hooks for m in model.modules())


def test_cam_equals_gradcam_on_gap_linear_head():
    # seed_cnn: conv stages -> GAP -> dropout -> linear. dy_c/dA_k(i, j) = w_ck / (h w), so Grad-CAM's
    # channel weights are the classifier's and Grad-CAM = ReLU(CAM) / (h w).
    model = build("seed_cnn")
    x = torch.randn(3, 3, 32, 32)
    for target in (None, torch.tensor([5, 0, 6])):  # the prediction, then one class per image
        c = cam(model, x, target, normalize=False, upsample=False)
        g = gradcam(model, x, target, normalize=False, upsample=False)
        h, w = g.shape[-2:]
        assert c.shape == (3, 8, 8) and (target is not None or (c.flatten(1).amax(1) > 0).all())
        torch.testing.assert_close(g * (h * w), c, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gradcam(model, x, target), cam(model, x, target), rtol=1e-4, atol=1e-5)


def test_layercam_on_gap_linear_head_keeps_only_positive_weights():
    # At the last stage of a GAP -> linear head every position's gradient is w_ck / (h w), so LayerCAM is
    # ReLU(sum_k ReLU(w_ck) A_k) / (h w): the CAM sum with the negative classifier weights dropped.
    model = build("seed_cnn").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, C, h, w)
    w = model.get_classifier().weight[4].relu()
    h, wd = feats.shape[-2:]
    expected = torch.einsum("c,bchw->bhw", w, feats).relu() / (h * wd)
    got = layercam(model, x, target=4, normalize=False, upsample=False)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # at an earlier layer it keeps that layer's grid
    assert layercam(model, x, target=4, layer="features.0", upsample=False).shape == (2, 32, 32)


def test_cam_matches_the_logit_decomposition():
    # Without the ReLU, mean_ij CAM_c(i, j) + b_c is the logit itself (the definition of CAM).
    model = build("seed_cnn").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    fc = model.get_classifier()
    full = torch.einsum("kc,bchw->bkhw", fc.weight, feats)
    torch.testing.assert_close(full.mean((2, 3)) + fc.bias, logits, rtol=1e-4, atol=1e-5)
    c = cam(model, x, target=2, normalize=False, upsample=False)
    torch.testing.assert_close(c, full[:, 2].relu(), rtol=1e-4, atol=1e-5)


def test_cam_raises_where_the_head_is_not_gap_linear():
    x = torch.randn(2, 3, 32, 32)
    fast = build("fastnet")  # global MAX pool: CAM's identity does not hold
    with pytest.raises(CnnkitError, match="global-average-pool"):
        cam(fast, x)
    # With strict=False the weighted sum still equals Grad-CAM: the max pool sends each channel's gradient
    # to one position, so Grad-CAM's weight is again w_ck / (h w) (times the logit scale) ...
    approx = cam(fast, x, strict=False)
    torch.testing.assert_close(approx, gradcam(fast, x), rtol=1e-4, atol=1e-5)
    # ... but the map no longer decomposes the logit: its mean is not the (unscaled) class score.
    fast.eval()
    with torch.no_grad():
        feats = fast.forward_features(x)
        logits = fast.forward_head(feats) / fast.logit_scale
    fc = fast.get_classifier()
    decomposed = torch.einsum("kc,bchw->bkhw", fc.weight, feats).mean((2, 3)) + fc.bias
    assert not torch.allclose(decomposed, logits, rtol=1e-2, atol=1e-3)
    with pytest.raises(CnnkitError, match="Linear\\(84"):  # LeNet-5: F6 sits between the pool and the classifier
        cam(build("lenet5_modern"), x)
    vit = build("vit_tiny", small_input=True)
    with pytest.raises(CnnkitError, match="tokens"):
        cam(vit, x)


def test_gradcam_on_tokens_and_named_layers():
    vit = build("vit_tiny", small_input=True, depth=2)
    x = torch.randn(2, 3, 32, 32)
    assert gradcam(vit, x).shape == (2, 32, 32)
    assert gradcam(vit, x, upsample=False).shape == (2, 8, 8)  # patch 4 on 32 px: an 8 x 8 token grid
    assert feature_maps(vit, x).shape == (2, 192, 8, 8)
    fast = build("fastnet")
    assert gradcam(fast, x, layer="layer2", upsample=False).shape == (2, 8, 8)
    assert resolve_layer(fast)[0] == "layer3"
    with pytest.raises(CnnkitError, match="Did you mean 'layer3'"):
        gradcam(fast, x, layer="layer33")
    with pytest.raises(CnnkitError, match="out of range"):
        gradcam(fast, x, target=8)


class _GuidedReLU(torch.autograd.Function):
    """The oracle: ReLU whose backward is (x > 0) * max(grad, 0), written directly."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad)


class _OracleReLU(nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def _with_oracle_relus(model):
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.ReLU):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, _OracleReLU())
    return model


@pytest.mark.parametrize("name", ["seed_cnn", "fastnet"])
def test_guided_backprop_matches_oracle(name):
    model = build(name)
    x = torch.randn(2, 3, 32, 32)
    got = guided_backprop(model, x, target=3)
    oracle = _with_oracle_relus(model).eval()
    xr = x.clone().requires_grad_(True)
    oracle(xr)[:, 3].sum().backward()
    torch.testing.assert_close(got, xr.grad, rtol=1e-4, atol=1e-6)
    xp = x.clone().requires_grad_(True)  # and it is not the plain gradient
    model.eval()(xp)[:, 3].sum().backward()
    assert not torch.allclose(got, xp.grad, atol=1e-6)


def test_guided_backprop_passes_only_positive_gradients():
    # Conv -> ReLU(inplace) -> Conv -> ReLU(inplace) -> linear: the gradient reaching each ReLU's input
    # is non-negative wherever the input is positive, and zero elsewhere.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    seen = []

    def grab(mod, inputs, out):
        inputs[0].register_hook(lambda g: seen.append((inputs[0].detach().clone(), g)))

    hooks = [m.register_forward_hook(grab) for m in net if isinstance(m, nn.ReLU)]
    g = guided_backprop(net, torch.randn(2, 1, 6, 6), target=0)
    for h in hooks:
        h.remove()
    assert g.shape == (2, 1, 6, 6) and len(seen) == 2
    for pre, grad in seen:
        assert (grad >= 0).all() and (grad[pre <= 0] == 0).all() and (grad > 0).any()
    assert all(m.inplace for m in net if isinstance(m, nn.ReLU))


def test_guided_backprop_needs_relus():
    with pytest.raises(CnnkitError, match="ReLU"):
        guided_backprop(build("lenet5"), torch.randn(1, 3, 32, 32))  # the paper's scaled tanh
