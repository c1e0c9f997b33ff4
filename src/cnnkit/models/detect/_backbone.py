"""Multi-scale features from any cnnkit classification model, through its `feature_info`.

Dense heads (detection necks, segmentation decoders, pose heads) take a list of feature maps
and their channel counts, never a model name:

    bb = Backbone("resnet18", reductions=(8, 16, 32), in_chans=3)
    feats = bb(x)          # [(B, 128, H/8, W/8), (B, 256, H/16, W/16), (B, 512, H/32, W/32)]
    bb.channels            # [128, 256, 512]

For each wanted reduction the last stage of `feature_info` with that stride is taken; its output
is caught by a forward hook while `forward_features` runs, so every model that follows the
interface works with no per-model code. The classifier is dropped (`num_classes=0`).
"""
from __future__ import annotations

import torch
from torch import nn

from ...registry import CnnkitError


def _module(model: nn.Module, path: str) -> nn.Module:
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


class Backbone(nn.Module):
    def __init__(self, model: str | nn.Module, reductions=(8, 16, 32), in_chans: int = 3, **model_args):
        super().__init__()
        if isinstance(model, str):
            from .. import create_model

            model = create_model(model, num_classes=0, in_chans=in_chans, **model_args)
        info = getattr(model, "feature_info", None)
        if not info:
            raise CnnkitError(f"{type(model).__name__} has no feature_info, so it cannot serve as a backbone")
        self.body = model
        picked = []
        for r in reductions:
            stages = [f for f in info if f["reduction"] == r]
            if not stages:
                have = sorted({f["reduction"] for f in info})
                raise CnnkitError(f"{type(model).__name__} has no stage at stride {r} (it has {have})")
            picked.append(stages[-1])
        self.reductions = list(reductions)
        self.channels = [f["num_chs"] for f in picked]
        self.modules_ = [f["module"] for f in picked]
        for name in dict.fromkeys(self.modules_):
            _module(model, name).register_forward_hook(_keep_output)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.body.forward_features(x)
        stages = [_module(self.body, m) for m in self.modules_]
        feats = [s._cnnkit_out for s in stages]
        for s in stages:
            s._cnnkit_out = None  # no reference kept to the batch's activations
        return feats


def _keep_output(module: nn.Module, _inp, out) -> None:
    """Forward hook: the stage keeps its own output. On the module, not in a closure, so a deep copy of
    the model (the EMA copy) catches its own stages' outputs, not the original's."""
    module._cnnkit_out = out
