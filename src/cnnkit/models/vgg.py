"""VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014).

Only 3x3 convs (stride 1, padding 1) in five groups, each closed by a 2x2 max-pool, then three
fully connected layers. Two stacked 3x3 convs see a 5x5 region with 2*9*C^2 weights instead of
25*C^2 (three see 7x7 with 27*C^2 instead of 49*C^2), with a non-linearity in between.
VGG-16 = 13 convs + 3 FC layers. The configurations A/B/D/E of the paper's Table 1 are data below.
"""
from __future__ import annotations

from torch import nn

from ..nn.act import ActLayer, create_act
from ..nn.norm import NormLayer, get_norm_layer
from ..registry import register_model
from ._base import ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

# Table 1 of the paper: conv widths in order, "M" = 2x2 max-pool. (C, with 1x1 convs, and A-LRN are
# not in torchvision and not registered.)
VGG_CFGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # VGG-11
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # VGG-13
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),  # VGG-16
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),  # VGG-19
}


class MLPHead(nn.Module):
    """AlexNet's and VGG's classifier: pool to (P, P) -> flatten -> [fc -> act -> dropout] x 2 -> fc.

    (B, C, H, W) -> (B, num_classes); `pre_logits` stops at the (B, hidden) features. The adaptive
    pool makes the head accept any input size (P = 7 for VGG, 6 for AlexNet at 224 px).
    """

    def __init__(self, in_chs: int, num_classes: int, pool_size: int = 7, hidden: int = 4096,
                 drop_rate: float = 0.5, act_layer: ActLayer = "relu"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(in_chs * pool_size * pool_size, hidden)
        self.act1 = create_act(act_layer, inplace=True)
        self.drop1 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = create_act(act_layer, inplace=True)
        self.drop2 = nn.Dropout(drop_rate)
        self.in_features = hidden
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x, pre_logits: bool = False):
        x = self.flatten(self.pool(x))  # (B, C*P*P)
        x = self.drop1(self.act1(self.fc1(x)))  # (B, hidden)
        x = self.drop2(self.act2(self.fc2(x)))  # (B, hidden)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()


class VGG(ClassifierModel):
    """VGG from a configuration row (`VGG_CFGS`); `norm_layer="batch"` gives the *_bn variants.

    `features` is one flat Sequential (conv, [norm], act, ..., pool) as in torchvision, so indices
    and weights match. Departures from the paper: batch norm (the *_bn variants, which postdate the
    paper) keeps the conv bias, as torchvision does; an adaptive average pool before the classifier
    lets any input size through (the paper evaluates larger images "fully convolutionally").

    small_input (28-32 px): the five pools already bring 32 px to 1x1, so the head pools to 1x1
    (not 7x7, which would copy one value 49 times into a 25088-wide layer) and its hidden layers
    have 512 units (not 4096), the usual CIFAR VGG; `hidden` overrides the width. The pools round
    up (ceil_mode) so that 28 px survives all five (28 -> 14 -> 7 -> 4 -> 2 -> 1).
    """

    def __init__(self, cfg=VGG_CFGS["D"], num_classes: int = 1000, in_chans: int = 3, norm_layer: NormLayer = None,
                 small_input: bool = False, drop_rate: float = 0.5, act_layer: ActLayer = "relu",
                 hidden: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        layers, self.feature_info = [], []
        chs, reduction = in_chans, 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=small_input))  # ceil: 28 px -> 14, 7, 4, 2, 1
                reduction *= 2
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.{len(layers) - 1}"))
                continue
            layers.append(nn.Conv2d(chs, v, 3, padding=1))
            if norm_layer is not None:
                layers.append(get_norm_layer(norm_layer)(v))
            layers.append(create_act(act_layer, inplace=True))
            chs = v
        self.features = nn.Sequential(*layers)
        self.num_features = chs
        hidden = hidden or (512 if small_input else 4096)
        self.head = MLPHead(chs, num_classes, 1 if small_input else 7, hidden, drop_rate, act_layer)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.features(x)  # (B, 512, H/32, W/32)


def _vgg(name: str, cfg_key: str, norm_layer, num_classes: int, in_chans: int, **kwargs) -> VGG:
    model = VGG(VGG_CFGS[cfg_key], num_classes, in_chans, norm_layer=norm_layer, **kwargs)
    size = 32 if kwargs.get("small_input") else 224
    notes = "configuration " + cfg_key + ("; batch norm after each conv (not in the paper)" if norm_layer else "")
    cfg = make_cfg((3, size, size), first_conv="features.0", classifier="head.fc", config=cfg_key, notes=notes,
                   paper="Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
                         "Recognition, ICLR 2015 (arXiv 2014)")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=name)
    return model


@register_model
def vgg11(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-11 (configuration A): 8 convs + 3 FC."""
    return _vgg("vgg11", "A", None, num_classes, in_chans, **kwargs)


@register_model
def vgg13(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-13 (configuration B): 10 convs + 3 FC."""
    return _vgg("vgg13", "B", None, num_classes, in_chans, **kwargs)


@register_model
def vgg16(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-16 (configuration D): 13 convs + 3 FC, 138.4 M parameters."""
    return _vgg("vgg16", "D", None, num_classes, in_chans, **kwargs)


@register_model
def vgg19(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-19 (configuration E): 16 convs + 3 FC."""
    return _vgg("vgg19", "E", None, num_classes, in_chans, **kwargs)


@register_model
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-11 with batch norm after every conv."""
    return _vgg("vgg11_bn", "A", "batch", num_classes, in_chans, **kwargs)


@register_model
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-13 with batch norm after every conv."""
    return _vgg("vgg13_bn", "B", "batch", num_classes, in_chans, **kwargs)


@register_model
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-16 with batch norm after every conv."""
    return _vgg("vgg16_bn", "D", "batch", num_classes, in_chans, **kwargs)


@register_model
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """VGG-19 with batch norm after every conv."""
    return _vgg("vgg19_bn", "E", "batch", num_classes, in_chans, **kwargs)


# torchvision's classifier: 0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear
_TV_HEAD = {"classifier.0.": "head.fc1.", "classifier.3.": "head.fc2.", "classifier.6.": "head.fc."}


def rename_prefixes(sd: dict, table: dict) -> dict:
    """Replace the first matching key prefix from `table`; other keys are kept."""
    out = {}
    for k, v in sd.items():
        old = next((p for p in table if k.startswith(p)), None)
        out[table[old] + k[len(old):] if old else k] = v
    return out


@register_tv_converter("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")
def _from_torchvision(sd, model):
    return rename_prefixes(sd, _TV_HEAD)
