"""Class activation maps: where in the image the evidence for a class lies (the guide, §7.4).

- `cam` (Zhou et al. 2016): for a network that ends in global average pooling -> linear, the logit
  of class c is sum_k w_ck mean_ij A_k(i, j) + b_c, so M_c(i, j) = sum_k w_ck A_k(i, j) says how much
  each position adds to it. Exact only for that head; other heads raise (or, with
  `strict=False`, give the same weighted sum as an approximation).
- `gradcam` (Selvaraju et al. 2017): any layer, any head. Channel weights are the spatially
  averaged gradients of the class score, alpha_k = mean_ij dy_c / dA_k(i, j), and the map is
  ReLU(sum_k alpha_k A_k). On a GAP -> linear head at the last layer alpha_k = w_ck / (h w),
  so Grad-CAM equals ReLU(CAM) up to a positive factor. (So it does behind a global *max* pool,
  as in FastNet: the max sends each channel's gradient to one position, again alpha_k = w_ck / (h w);
  there the map is still the same weighted sum, but its mean is no longer the logit, which is
  why `cam` refuses that head unless `strict=False`.)
- `gradcam_pp` (Chattopadhay et al. 2018): per-position weights that favour several instances.
- `layercam` (Jiang et al. 2021): each position weighted by its own positive gradient; stays
  sharp at earlier layers of finer resolution.
- `guided_backprop` (Springenberg et al. 2015): input gradient where every ReLU also blocks
  negative gradients; sharp but not class-discriminative. `guided_gradcam` multiplies it by
  the upsampled Grad-CAM map to get both.

All take a float batch (B, C, H, W) already normalised the way the model expects (or one image
(C, H, W)) and a `target`: None (the predicted class), one class or one per image. Maps come
back (B, H, W), upsampled to the input and scaled so each peak is 1 (`normalize=False` keeps the
raw values, `upsample=False` the layer's resolution).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..registry import CnnkitError
from ._core import (as_batch, capture, explaining, normalize_maps, pick_target, resolve_layer, to_map,
                    upsample)


def _finish(maps: torch.Tensor, x: torch.Tensor, normalize: bool, do_upsample: bool) -> torch.Tensor:
    maps = maps.float()
    if do_upsample:
        maps = upsample(maps, x.shape[-2:])
    return normalize_maps(maps) if normalize else maps


def cam(model: nn.Module, x: torch.Tensor, target=None, normalize: bool = True, upsample: bool = True,
        strict: bool = True) -> torch.Tensor:
    """Class activation map (B, H, W) from the classifier weights and the last feature map.

    Needs a (global average pool -> linear) head: `forward_features` must give (B, C, h, w),
    `get_classifier()` must be an nn.Linear with C inputs, and the logits must equal (up to a
    positive factor, e.g. a temperature) the linear layer applied to the averaged features. A
    model that pools differently (FastNet's global max pool) or has more layers after the pool
    (LeNet-5's F6) raises a CnnkitError; `strict=False` skips the head check and returns the
    weighted sum anyway: no longer a decomposition of the logit (behind a max pool it equals
    Grad-CAM at the last stage, see the module notes). Negative evidence is clipped (ReLU), as in the
    paper's figures.
    """
    x = as_batch(model, x)
    with explaining(model), torch.no_grad():
        feats = model.forward_features(x)
        name = type(model).__name__
        if feats.ndim != 4:
            raise CnnkitError(f"cam needs a (B, C, h, w) last feature map, but {name}.forward_features gives "
                              f"{tuple(feats.shape)} (tokens?); use gradcam")
        fc = model.get_classifier()
        if not isinstance(fc, nn.Linear) or fc.in_features != feats.shape[1]:
            what = f"Linear({fc.in_features} -> {fc.out_features})" if isinstance(fc, nn.Linear) else type(fc).__name__
            raise CnnkitError(f"cam needs a global-pool -> linear head on the {feats.shape[1]}-channel feature map, "
                              f"but {name}'s classifier is {what}; use gradcam")
        logits = model.forward_head(feats).float()  # (B, K)
        if strict:
            gap = fc(feats.mean((2, 3))).float()  # what a GAP -> linear head would give
            scale = (logits * gap).sum() / (gap * gap).sum().clamp(min=1e-12)
            tol = 1e-3 * gap.abs().max().clamp(min=1e-6)
            if not (scale > 0 and torch.allclose(logits, scale * gap, rtol=1e-3, atol=float(tol))):
                raise CnnkitError(f"cam is exact only for a global-average-pool -> linear head, and {name}'s "
                                  "logits differ from that (another pooling, or layers after the pool); "
                                  "use gradcam, or cam(..., strict=False) for the approximation")
        t = pick_target(logits, target)
        maps = torch.einsum("bc,bchw->bhw", fc.weight[t].to(feats.dtype), feats).relu()  # (B, h, w)
    return _finish(maps, x, normalize, upsample)


def _grads(model: nn.Module, x: torch.Tensor, target, layer) -> Tuple[torch.Tensor, torch.Tensor]:
    """Activation A and gradient dy_c/dA of the layer, both (B, C, h, w), for the chosen classes."""
    name, module = resolve_layer(model, layer)
    x = x.clone().requires_grad_(True)  # so the layer is in the graph even with frozen weights
    with explaining(model):
        logits, act = capture(model, x, module)
        t = pick_target(logits, target)
        score = logits.gather(1, t[:, None]).sum()  # images are independent in eval mode
        (grad,) = torch.autograd.grad(score, act)
    hw = x.shape[-2:]
    return to_map(model, act.detach(), name, hw).float(), to_map(model, grad, name, hw).float()


def gradcam(model: nn.Module, x: torch.Tensor, target=None, layer=None, normalize: bool = True,
            upsample: bool = True) -> torch.Tensor:
    """Grad-CAM (B, H, W) at `layer` (default: the last feature stage, `feature_info[-1]`)."""
    x = as_batch(model, x)
    act, grad = _grads(model, x, target, layer)
    alpha = grad.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
    maps = (alpha * act).sum(1).relu()  # (B, h, w)
    return _finish(maps, x, normalize, upsample)


def gradcam_pp(model: nn.Module, x: torch.Tensor, target=None, layer=None, normalize: bool = True,
               upsample: bool = True) -> torch.Tensor:
    """Grad-CAM++ (B, H, W): weights w_k = sum_ij a_k(i, j) ReLU(g_k(i, j)) with
    a = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3), the closed form for an exponential of the class score
    (its factor exp(y_c) is positive and cancels in the normalised map)."""
    x = as_batch(model, x)
    act, grad = _grads(model, x, target, layer)
    g2, g3 = grad.pow(2), grad.pow(3)
    denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g3
    a = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (a * grad.relu()).sum((2, 3), keepdim=True)  # (B, C, 1, 1)
    maps = (weights * act).sum(1).relu()
    return _finish(maps, x, normalize, upsample)


def layercam(model: nn.Module, x: torch.Tensor, target=None, layer=None, normalize: bool = True,
             upsample: bool = True) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021) (B, H, W): ReLU(sum_k ReLU(g_k(i, j)) A_k(i, j)), each position
    weighted by its own positive gradient instead of the channel's average. At the last stage of a
    GAP -> linear head every g_k(i, j) is w_ck / (h w), so it is Grad-CAM with negative weights
    dropped; at earlier, finer layers the per-position gradient keeps the map on the units that
    actually feed the class score, where Grad-CAM's averaged weights light up every edge alike."""
    x = as_batch(model, x)
    act, grad = _grads(model, x, target, layer)
    maps = (grad.relu() * act).sum(1).relu()  # (B, h, w)
    return _finish(maps, x, normalize, upsample)


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


GUIDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)  # what cnnkit.nn.act creates for "relu" / "relu6"


def guided_backprop(model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
    """Guided backpropagation: d y_c / d x (B, C, H, W) where each ReLU module passes back only
    positive gradients at positive inputs, grad_in = (x > 0) * max(grad_out, 0).

    A forward hook puts a "positive gradients only" identity after every nn.ReLU / nn.ReLU6
    module (in-place ones are switched to out-of-place while it runs), so the ReLU's own
    backward adds the (x > 0) mask. Activations of other kinds and functional relu calls are
    left as they are; a model without ReLU modules raises a CnnkitError."""
    x = as_batch(model, x).clone().requires_grad_(True)
    acts = [m for m in model.modules() if isinstance(m, GUIDED_ACTIVATIONS)]
    if not acts:
        raise CnnkitError(f"guided backprop needs ReLU activations, and {type(model).__name__} has no nn.ReLU "
                          "modules; use gradcam")
    hook = lambda mod, inputs, out: _PositiveGrad.apply(out)  # noqa: E731
    handles = [m.register_forward_hook(hook) for m in acts]
    try:
        with explaining(model):
            logits = model(x)
            t = pick_target(logits, target)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    finally:
        for h in handles:
            h.remove()
    return grad.float()


def guided_gradcam(model: nn.Module, x: torch.Tensor, target=None, layer=None) -> torch.Tensor:
    """Guided Grad-CAM (B, C, H, W): guided backprop times the upsampled, normalised Grad-CAM map.
    The class is fixed once (the prediction when `target` is None) so both parts explain the same class."""
    x = as_batch(model, x)
    if target is None:
        with explaining(model), torch.no_grad():
            target = model(x).argmax(1)
    return guided_backprop(model, x, target) * gradcam(model, x, target, layer)[:, None]
