"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015; arXiv 2014).

22 layers with weights, built from nine Inception modules (parallel 1x1 / 3x3 / 5x5 / pool branches
with 1x1 bottlenecks, cnnkit.nn.inception), global average pooling instead of big FC layers, and
~12x fewer parameters than AlexNet (6.6 M vs 61.1 M). Two auxiliary classifiers on inception(4a)
and (4d) add gradient to the middle of the net while training and are dropped at inference.

Auxiliary logits -- how a training loop uses them:

    out = model(x)        # training: GoogLeNetOutputs(logits, aux1, aux2), a named tuple of (B, num_classes)
                          # eval (or aux_logits=False): the plain (B, num_classes) logits tensor
    loss = loss_with_aux(out, y, criterion, model.aux_loss_weight)
         # = criterion(logits, y) + 0.3 * (criterion(aux1, y) + criterion(aux2, y)); criterion(out, y) for a tensor
    logits, aux = split_aux(out)   # for metrics: the main logits whatever the mode

0.3 is the paper's discount for the auxiliary losses (`model.aux_loss_weight`, also in default_cfg).
Both helpers accept any model's output, so an engine needs no per-model code. Returning the aux
logits (as torchvision does) rather than storing them on the module keeps `forward` free of side
effects (deepcopy for EMA, DDP and torch.compile all stay simple).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from ..nn.act import ActLayer, create_act
from ..nn.conv import ConvNormAct
from ..nn.inception import Inception
from ..nn.norm import NormLayer
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, per module.
INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """What `GoogLeNet.forward` returns in training mode: main logits first, then the auxiliary ones."""

    logits: torch.Tensor  # (B, num_classes), from inception(5b)
    aux1: torch.Tensor  # (B, num_classes), from inception(4a)
    aux2: torch.Tensor  # (B, num_classes), from inception(4d)


def split_aux(outputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main logits, [auxiliary logits]) from a model output: a tensor or a tuple with the logits first."""
    if isinstance(outputs, (tuple, list)):
        return outputs[0], list(outputs[1:])
    return outputs, []


def loss_with_aux(outputs, target: torch.Tensor, criterion, aux_weight: float = 0.3) -> torch.Tensor:
    """criterion(logits, target) + aux_weight * sum_i criterion(aux_i, target).

    For a plain tensor output this is criterion(outputs, target): safe to call for every model.
    """
    logits, aux = split_aux(outputs)
    loss = criterion(logits, target)
    for a in aux:
        loss = loss + aux_weight * criterion(a, target)
    return loss


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv 128 -> fc 1024 -> dropout 0.7 -> fc.

    (B, C, H, W) -> (B, num_classes). The paper pools 5x5 with stride 3, which is 4x4 on its 14x14
    maps; an adaptive pool gives 4x4 at any size.
    """

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.7, norm_layer: NormLayer = "batch",
                 act_layer: ActLayer = "relu"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvNormAct(in_chs, 128, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = create_act(act_layer, inplace=True)
        self.dropout = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv(self.pool(x)).flatten(1)  # (B, 2048)
        return self.fc2(self.dropout(self.act(self.fc1(x))))  # (B, num_classes)


class GoogLeNet(ClassifierModel):
    """GoogLeNet with batch norm, as torchvision builds it (6,624,904 parameters without aux heads).

    Departures from the paper: batch norm after every conv (eps 1e-3, as torchvision; the paper
    predates batch norm) and no local response normalisation; the third ("5x5") branch uses a 3x3
    kernel by default (`branch3_kernel=3`), as torchvision does so that its ImageNet weights load --
    pass `branch3_kernel=5` for the paper's 5x5 (+~0.4 M parameters). torchvision's pretrained
    weights expect inputs normalised to [-1, 1] (its `transform_input`); with random init it does
    not matter.

    small_input (28-32 px): a 3x3 stride-1 first conv and no first max-pool, so 32 px reaches the
    inception(3a) at 16x16 and the last map is 4x4.

    forward: plain logits in eval; in training (with aux_logits=True, the paper's default)
    GoogLeNetOutputs(logits, aux1, aux2) -- combine with `loss_with_aux` (module docstring).
    """

    aux_loss_weight = 0.3  # the paper's weight of each auxiliary loss

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True, small_input: bool = False,
                 drop_rate: float = 0.2, aux_drop_rate: float = 0.7, branch3_kernel: int = 3,
                 act_layer: ActLayer = "relu", norm_layer: NormLayer = partial(nn.BatchNorm2d, eps=1e-3)):
        super().__init__()
        self.num_classes = num_classes
        cna = dict(norm_layer=norm_layer, act_layer=act_layer)
        if small_input:
            self.conv1 = ConvNormAct(in_chans, 64, 3, 1, **cna)  # (B, 64, H, W)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = ConvNormAct(in_chans, 64, 7, 2, **cna)  # (B, 64, H/2, W/2)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)  # (B, 64, H/4, W/4)
        self.conv2 = ConvNormAct(64, 64, 1, **cna)
        self.conv3 = ConvNormAct(64, 192, 3, **cna)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)  # (B, 192, H/8, W/8)
        pools = {"4a": ("maxpool3", nn.MaxPool2d(3, 2, ceil_mode=True)),  # after 3b: (B, 480, H/16, W/16)
                 "5a": ("maxpool4", nn.MaxPool2d(2, 2, ceil_mode=True))}  # after 4e: (B, 832, H/32, W/32)
        chs = 192
        for name, row in INCEPTION_CFG.items():
            if name in pools:
                self.add_module(*pools[name])
            block = Inception(chs, *row, kernel_5x5=branch3_kernel, **cna)
            self.add_module(f"inception{name}", block)
            chs = block.out_channels
        self.aux_logits = aux_logits
        self.aux1 = InceptionAux(512, num_classes, aux_drop_rate, **cna) if aux_logits else None  # on 4a
        self.aux2 = InceptionAux(528, num_classes, aux_drop_rate, **cna) if aux_logits else None  # on 4d
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)

        r = 1 if small_input else 2  # stride of conv1, and of maxpool1
        self.feature_info = [dict(num_chs=64, reduction=r, module="conv1"),
                             dict(num_chs=192, reduction=r * r, module="conv3"),
                             dict(num_chs=480, reduction=2 * r * r, module="inception3b"),
                             dict(num_chs=832, reduction=4 * r * r, module="inception4e"),
                             dict(num_chs=1024, reduction=8 * r * r, module="inception5b")]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.01)  # torchvision: trunc_normal_ at +-2 = 200 std, i.e. never
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _trunk(self, x, with_aux: bool):
        """(B, C, H, W) -> ((B, 1024, H/32, W/32), [aux1 logits, aux2 logits] if with_aux else [])."""
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, H/16, W/16)
        x = self.inception4a(x)  # (B, 512, H/16, W/16)
        aux = [self.aux1(x)] if with_aux else []
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (B, 528, H/16, W/16)
        if with_aux:
            aux.append(self.aux2(x))
        x = self.maxpool4(self.inception4e(x))  # (B, 832, H/32, W/32)
        return self.inception5b(self.inception5a(x)), aux  # (B, 1024, H/32, W/32)

    def forward_features(self, x):
        return self._trunk(x, with_aux=False)[0]

    def forward(self, x):
        """Eval: (B, num_classes) logits. Training with aux heads: GoogLeNetOutputs(logits, aux1, aux2)."""
        x, aux = self._trunk(x, with_aux=self.training and self.aux1 is not None)
        logits = self.forward_head(x)
        return GoogLeNetOutputs(logits, *aux) if aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = nn.Linear(aux.fc2.in_features, num_classes)


@register_model
def googlenet(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """GoogLeNet (Inception v1) with batch norm: 6.6 M parameters (13.0 M with the training-only aux heads)."""
    model = GoogLeNet(num_classes, in_chans, **kwargs)
    size = 32 if kwargs.get("small_input") else 224
    cfg = make_cfg((3, size, size), first_conv="conv1.conv", classifier="head.fc", aux_loss_weight=GoogLeNet.aux_loss_weight,
                   paper="Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv 2014)",
                   notes="batch norm (eps 1e-3), no LRN, 3x3 kernel in the '5x5' branch unless branch3_kernel=5 "
                         "(torchvision layout)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="googlenet", tv_name="googlenet")
    return model


@register_tv_converter("googlenet")
def _from_torchvision(sd, model):
    """Module names follow torchvision's; only fc.* -> head.fc.*"""
    return {("head." + k if k.startswith("fc.") else k): v
            for k, v in sd.items()}
