"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), as in the paper and in its modern form.

Paper: 32x32 input; C1 6@5x5 -> S2 subsampling (trainable coefficient + bias, then a squashing
function) -> C3 16@5x5 where each map sees only a subset of S2's maps (the paper's Table I) ->
S4 -> C5 120@5x5 -> F6 84 -> an RBF output layer (each class scores the squared distance
between F6 and a fixed code vector). Activations are the scaled tanh 1.7159 tanh(2x/3).

`lenet5` follows the paper with these approximations: the RBF centres are learnable
parameters initialised to random +-1 codes (the paper used hand-drawn 7x12 bitmaps), and the
logits are the negative squared distances (so cross-entropy replaces the paper's MAP loss).
`lenet5_modern` is what people usually train today: full C3, ReLU, max-pooling, linear output
(61,706 parameters for 10 classes).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.act import create_act
from ..registry import register_model
from ._base import ClassifierModel, adapt_cfg, make_cfg

# Table I of the paper: which of S2's 6 maps (rows) feed each of C3's 16 maps (columns).
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3."""

    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsample(nn.Module):
    """S2/S4: sum of each 2x2 window times a trainable per-map coefficient, plus a per-map bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x = nn.functional.avg_pool2d(x, 2) * 4  # window sums, (B, C, H/2, W/2)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv(nn.Module):
    """C3: a 5x5 convolution whose output map j sees only S2 maps C3_TABLE[j] (masked weights)."""

    def __init__(self, in_chs=6, out_chs=16, table=C3_TABLE):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 5)
        mask = torch.zeros(out_chs, in_chs, 1, 1)
        for j, rows in enumerate(table):
            mask[j, list(rows)] = 1
        self.register_buffer("mask", mask, persistent=False)
        with torch.no_grad():
            self.conv.weight.mul_(self.mask)

    def forward(self, x):
        return nn.functional.conv2d(x, self.conv.weight * self.mask, self.conv.bias)


class RBFOutput(nn.Module):
    """Output layer: logit_i = -||f - c_i||^2 for a code vector c_i per class."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.centres = nn.Parameter(torch.randint(0, 2, (num_classes, in_features)).float() * 2 - 1)

    def forward(self, x):  # (B, F) -> (B, num_classes)
        return -torch.cdist(x, self.centres).pow(2)


class LeNet5(ClassifierModel):
    def __init__(self, num_classes=10, in_chans=1, paper: bool = True, act_layer=None, small_input=False):
        super().__init__()
        self.num_classes, self.paper = num_classes, paper
        act = (lambda: ScaledTanh()) if paper and act_layer is None else (lambda: create_act(act_layer or "relu"))
        pad = 2 if small_input else 0  # 28x28 images (MNIST) padded to the paper's 32x32
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=pad), act(),                       # C1 (B, 6, 28, 28)
            Subsample(6) if paper else nn.MaxPool2d(2), act() if paper else nn.Identity(),  # S2 (B, 6, 14, 14)
            PartialConv() if paper else nn.Conv2d(6, 16, 5), act(),              # C3 (B, 16, 10, 10)
            Subsample(16) if paper else nn.MaxPool2d(2), act() if paper else nn.Identity(),  # S4 (B, 16, 5, 5)
            nn.Conv2d(16, 120, 5), act(),                                         # C5 (B, 120, 1, 1)
        )
        self.head = LeNetHead(num_classes, paper, act)
        self.feature_info = [dict(num_chs=6, reduction=2, module="features.2"),
                             dict(num_chs=16, reduction=4, module="features.6"),
                             dict(num_chs=120, reduction=32, module="features.9")]

    def forward_features(self, x):
        return self.features(x)


class LeNetHead(nn.Module):
    def __init__(self, num_classes, paper, act):
        super().__init__()
        self.paper = paper
        self.flatten = nn.Flatten(1)
        self.f6 = nn.Linear(120, 84)
        self.act = act()
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes):
        return RBFOutput(84, num_classes) if self.paper else nn.Linear(84, num_classes)

    def forward(self, x, pre_logits=False):
        x = self.act(self.f6(self.flatten(x)))  # F6 (B, 84)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes):
        self.fc = self._make_fc(num_classes)


def _lenet(name, paper, num_classes, in_chans, **kwargs):
    model = LeNet5(num_classes, in_chans, paper=paper, **kwargs)
    size = 28 if kwargs.get("small_input") else 32
    cfg = make_cfg((1, size, size), mean=(0.5,), std=(0.5,), first_conv="features.0", classifier="head.fc",
                   paper="LeCun et al., Gradient-based learning applied to document recognition, 1998")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=None)
    return model


@register_model
def lenet5(num_classes: int = 10, in_chans: int = 1, **kwargs):
    """LeNet-5 as in the 1998 paper: partial C3 connections, trainable subsampling, scaled tanh, RBF output."""
    return _lenet("lenet5", True, num_classes, in_chans, **kwargs)


@register_model
def lenet5_modern(num_classes: int = 10, in_chans: int = 1, **kwargs):
    """LeNet-5 as trained today: full C3, ReLU, max-pooling, linear output (61,706 parameters)."""
    return _lenet("lenet5_modern", False, num_classes, in_chans, **kwargs)
