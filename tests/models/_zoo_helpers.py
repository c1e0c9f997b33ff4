"""Helpers shared by the model-zoo tests: parameter counts, cheap random weights for torchvision
oracles, and the feature_info check.

Imported as `from models._zoo_helpers import ...`: pyproject.toml puts tests/ on sys.path
(`pythonpath = ["tests"]`), because with `--import-mode=importlib` test files cannot import each other.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torchvision.models as tvm
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fill_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Cheap deterministic random weights and norm statistics, in place (weights ~ N(0, 1/fan_in))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if k.endswith("num_batches_tracked"):
                t.zero_()
            elif k.endswith("running_var") or (t.dim() == 1 and k.endswith("weight")):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dim() == 1:
                t.normal_(0, 0.1, generator=g)
            else:  # big FC layers: draw 1M values, then repeat them by doubling copies
                flat, n = t.view(-1), min(t.numel(), 1 << 20)
                flat[:n].normal_(0, t[0].numel() ** -0.5, generator=g)
                while n < flat.numel():
                    m = min(n, flat.numel() - n)
                    flat[n:n + m].copy_(flat[:m])
                    n += m
    return model


def tv_pair(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(ours, torchvision's) in eval mode, torchvision's random weights loaded into ours; no init cost."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, ref = create_model(name, num_classes=1000, **kwargs), getattr(tvm, name)(weights=None)
    ours.to_empty(device="cpu")
    ref = fill_(ref.to_empty(device="cpu"))
    load_torchvision_weights(ours, ref.state_dict())
    return ours.eval(), ref.eval()


def calibrate(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters, BN statistics measured on one random batch and a unit-scale
    classifier: eval outputs are O(1) and depend on every parameter, buffer and BN eps."""
    g = torch.Generator().manual_seed(seed)
    bns, saved = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)], {}
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            saved[m], m.momentum = m.momentum, 1.0  # running stats := this batch's stats
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
        model.train()(torch.randn(4, 3, 64, 64, generator=g))
        for m in bns:
            m.momentum = saved[m]
    return model.eval()


def assert_same_logits(ours: nn.Module, ref: nn.Module, x: torch.Tensor,
                       ref_features: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Features and logits equal the reference's to 1e-5 (both in eval mode, e.g. after `calibrate`);
    `ref_features(x)` is the reference's tensor that matches our `forward_features(x)`."""
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), ref_features(x), atol=1e-5, rtol=0)
        logits = ours(x)
        assert 0.5 < logits.abs().max() < 100  # O(1): a real comparison
        torch.testing.assert_close(logits, ref(x), atol=1e-5, rtol=0)


def random_state(model: nn.Module, seed: int = 0) -> dict:
    """Materialise a meta-built model with cheap random weights (norm scales near 1) and return its
    state dict; integer buffers (Swin's relative position index) are recomputed, not randomised."""
    g = torch.Generator().manual_seed(seed)
    model.to_empty(device="cpu")
    for m in model.modules():  # meta-built buffers hold no data: recompute the derived position index
        if hasattr(m, "define_relative_position_index"):
            m.define_relative_position_index()
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if not v.is_floating_point():
                continue
            noise = torch.randn(v.shape, generator=g)
            is_scale = v.ndim == 1 and k.endswith("weight") and ("ln" in k or "norm" in k)
            v.copy_(1 + 0.1 * noise if is_scale else 0.05 * noise)
    return sd


def check_feature_info(model: nn.Module, x: torch.Tensor, exact: bool = True) -> None:
    """Each feature_info entry names a real module whose output has the stated channels and stride.

    The width must be ceil(W / reduction); `exact=False` allows one pixel either side of W / reduction,
    for stems with unpadded 3x3/2 pools (AlexNet: 27, not 28).
    """
    out = {}
    modules = dict(model.named_modules())
    hooks = [modules[f["module"]].register_forward_hook(lambda m, i, o, k=f["module"]: out.__setitem__(k, o))
             for f in model.feature_info]
    with torch.no_grad():
        last = model.forward_features(x)
    for h in hooks:
        h.remove()
    for f in model.feature_info:
        y = out[f["module"]]
        assert y.shape[1] == f["num_chs"], f
        if exact:
            assert y.shape[-1] == -(-x.shape[-1] // f["reduction"]), f
        else:
            assert abs(y.shape[-1] - x.shape[-1] / f["reduction"]) <= 1, f
    assert last.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features


def assert_same_output(ours: nn.Module, ref: nn.Module, x: torch.Tensor, min_abs: float = 1e-3) -> None:
    """ours(x) equals the reference's 1000 logits to 1e-5; `min_abs` rules out a vacuous match of
    near-zero outputs."""
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert isinstance(y, torch.Tensor) and y.shape == (x.shape[0], 1000) and y_ref.abs().max() > min_abs
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def check_small_input_shapes(name: str, size: int) -> None:
    """`small_input=True` runs a size x size one-channel image through the model (shapes only, on meta)."""
    with torch.device("meta"):
        m = create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
        feats = m.forward_features(torch.empty(2, 1, size, size))
        assert feats.shape[:2] == (2, m.feature_info[-1]["num_chs"]) and min(feats.shape[-2:]) >= 1
        assert m.forward_head(feats).shape == (2, 10)


def check_backward_hooks(model: nn.Module, x: torch.Tensor) -> None:
    """Grad-CAM style full backward hooks work on every feature_info module (none is an in-place op)."""
    modules, grads = dict(model.named_modules()), []
    hooks = [modules[f["module"]].register_full_backward_hook(lambda mod, gi, go: grads.append(go[0].shape))
             for f in model.feature_info]
    model(x).sum().backward()
    for h in hooks:
        h.remove()
    assert len(grads) == len(model.feature_info)
