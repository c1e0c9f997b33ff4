"""The U-Net of nnU-Net's plans (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021): 2-D or 3-D, its depth,
per-axis strides and kernel sizes all read from a plan (`cnnkit plan`, `cnnkit/plan/`).

    x (B, C, [Z,] Y, X)
      encoder stage s (s = 0 .. S-1): conv k_s, stride t_s -> InstanceNorm -> LeakyReLU(0.01),
                                      conv k_s -> InstanceNorm -> LeakyReLU          width f_s
                                      (t_0 = 1: stage 0 keeps the full size; later stages
                                      downsample by their strided conv, not by pooling)
      decoder stage s (s = S-2 .. 0): transposed conv (kernel = stride = t_{s+1}) f_{s+1} -> f_s,
                                      concatenation with encoder stage s (the skip),
                                      two convs k_s as in the encoder                 width f_s
      a 1x1 conv -> K classes on every decoder stage; the finest is the output

Widths f_s = min(base_features * 2^s, max_features) (nnU-Net: 32, capped at 320 in 3-D and 512
in 2-D). Convs are padded (k // 2) and keep their bias, as nnU-Net's. **Deep supervision**: in
training mode `forward` returns the logits of every decoder stage but the coarsest, finest
first ([full, 1/t_1, 1/(t_1 t_2), ...]); the loss compares each with the label downsampled to
its size. In eval mode it returns the full-size logits only.

Inputs must be divisible by the product of the strides on each axis (the plan's patch sizes
are); other sizes are padded and the output cropped back.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import CnnkitError, register_model

PAPER = ("Isensee, Jaeger, Kohl, Petersen & Maier-Hein, nnU-Net: a self-configuring method for deep "
         "learning-based biomedical image segmentation, Nature Methods 2021")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


class ConvBlock(nn.Sequential):
    """conv (kernel, stride, padded) -> InstanceNorm (affine) -> LeakyReLU(0.01)."""

    def __init__(self, dims: int, in_chs: int, out_chs: int, kernel: Sequence[int], stride: Sequence[int] = 1):
        super().__init__()
        self.conv = _CONV[dims](in_chs, out_chs, tuple(kernel), tuple(stride) if not isinstance(stride, int)
                                else stride, padding=tuple(k // 2 for k in kernel))
        self.norm = _NORM[dims](out_chs, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)


class Stage(nn.Sequential):
    """Two ConvBlocks; the first carries the stage's stride."""

    def __init__(self, dims: int, in_chs: int, out_chs: int, kernel, stride):
        super().__init__(ConvBlock(dims, in_chs, out_chs, kernel, stride), ConvBlock(dims, out_chs, out_chs, kernel))


def _triple(v, dims: int) -> tuple[int, ...]:
    return (int(v),) * dims if isinstance(v, int) else tuple(int(a) for a in v)


class PlanUNet(nn.Module):
    """nnU-Net's plain U-Net, see the module docstring. `strides` and `kernel_sizes`: one entry per stage,
    each an int or a per-axis tuple (z, y, x) / (y, x); strides[0] is 1."""

    def __init__(self, num_classes: int = 2, in_chans: int = 1, dims: int = 3, strides=None, kernel_sizes=None,
                 base_features: int = 32, max_features: int | None = None, deep_supervision: bool = True):
        super().__init__()
        if dims not in (2, 3):
            raise CnnkitError(f"plan_unet: dims must be 2 or 3, got {dims}")
        strides = [_triple(s, dims) for s in (strides or [1, 2, 2, 2, 2])]
        kernel_sizes = [_triple(k, dims) for k in (kernel_sizes or [3] * len(strides))]
        if len(kernel_sizes) != len(strides):
            raise CnnkitError(f"plan_unet: {len(strides)} strides but {len(kernel_sizes)} kernel sizes "
                              f"(one of each per stage)")
        if any(len(s) != dims for s in strides) or any(len(k) != dims for k in kernel_sizes):
            raise CnnkitError(f"plan_unet: every stride and kernel size needs {dims} values (dims={dims})")
        if any(a != 1 for a in strides[0]):
            raise CnnkitError(f"plan_unet: the first stage keeps the full size (stride 1), got {strides[0]}")
        cap = max_features or (320 if dims == 3 else 512)
        widths = [min(base_features * 2**i, cap) for i in range(len(strides))]
        self.dims, self.num_classes, self.deep_supervision = dims, num_classes, deep_supervision
        self.strides, self.kernel_sizes, self.widths = strides, kernel_sizes, widths
        self.encoder = nn.ModuleList(Stage(dims, in_chans if i == 0 else widths[i - 1], widths[i], kernel_sizes[i],
                                           strides[i]) for i in range(len(strides)))
        n = len(strides)
        self.up = nn.ModuleList(_UP[dims](widths[i + 1], widths[i], strides[i + 1], strides[i + 1])
                                for i in range(n - 2, -1, -1))
        self.decoder = nn.ModuleList(Stage(dims, 2 * widths[i], widths[i], kernel_sizes[i], 1)
                                     for i in range(n - 2, -1, -1))
        self.seg = nn.ModuleList(_CONV[dims](widths[i], num_classes, 1) for i in range(n - 2, -1, -1))
        self._init()

    def _init(self) -> None:
        """He initialisation for the LeakyReLU, biases 0 (nnU-Net's InitWeights_He with a = 0.01)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def divisor(self) -> tuple[int, ...]:
        """What each spatial axis must be a multiple of: the product of the strides on it."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(self.dims))

    def forward(self, x: torch.Tensor):
        if x.ndim != self.dims + 2:
            raise CnnkitError(f"plan_unet ({self.dims}-D) takes (B, C, {'Z, ' if self.dims == 3 else ''}Y, X) "
                              f"inputs, got shape {tuple(x.shape)}")
        size = x.shape[2:]
        pad = [(-n) % d for n, d in zip(size, self.divisor)]
        if any(pad):
            x = F.pad(x, [p for q in reversed(pad) for p in (0, q)])
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outs = []
        for up, dec, seg in zip(self.up, self.decoder, self.seg):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
            outs.append(seg(x))
        crop = tuple(slice(0, n) for n in size)
        full = outs[-1][(..., *crop)]
        if self.training and self.deep_supervision:
            # finest first, without the coarsest decoder stage (nnU-Net leaves out the lowest resolution)
            return [full] + outs[-2:0:-1]
        return full

    def get_classifier(self) -> nn.Module:
        return self.seg[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.seg = nn.ModuleList(_CONV[self.dims](s.in_channels, num_classes, 1) for s in self.seg)
        self.num_classes = num_classes
        self.default_cfg = dict(self.default_cfg, num_classes=num_classes)


@register_model
def plan_unet(num_classes: int = 2, in_chans: int = 1, dims: int = 3, strides=None, kernel_sizes=None,
              base_features: int = 32, max_features: int | None = None, deep_supervision: bool = True,
              patch_size=None) -> PlanUNet:
    """nnU-Net's plain U-Net, 2-D or 3-D, built from a plan (`cnnkit plan`, then `cnnkit train --plan`):
    per stage two conv-InstanceNorm-LeakyReLU blocks, strided-conv downsampling, transposed-conv upsampling,
    skip concatenation, deep supervision. Options: dims, strides, kernel_sizes (per stage, per axis),
    base_features (32), max_features (320 in 3-D, 512 in 2-D), deep_supervision, patch_size (default_cfg only).
    Default: 3-D, 5 stages (strides 1, 2, 2, 2, 2), 1 channel, 2 classes."""
    model = PlanUNet(num_classes, in_chans, dims, strides, kernel_sizes, base_features, max_features,
                     deep_supervision)
    patch = tuple(patch_size) if patch_size else tuple(16 * d for d in model.divisor)[:dims]
    model.default_cfg = dict(input_size=(in_chans, *patch), mean=(0.0,) * in_chans, std=(1.0,) * in_chans,
                             first_conv="encoder.0.0.conv", classifier=f"seg.{len(model.seg) - 1}",
                             task="volume", paper=PAPER, architecture="plan_unet", num_classes=num_classes,
                             dims=dims, export=False, backbone=None,
                             notes="inputs are normalised by the plan (CT clip + z-score or per-image z-score)")
    return model


__all__ = ["PlanUNet", "plan_unet"]
