"""DenseNet (Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017)
and CheXNet (Rajpurkar et al., 2017), a DenseNet-121 that reads chest X-rays.

Stem (7x7/2 conv, norm, act, 3x3/2 max-pool) -> four dense blocks joined by transitions that halve
channels and size -> norm, act -> global average pool -> linear. These are the DenseNet-BC models
of the paper's Table 1: 1x1 bottlenecks of 4*k channels and compression 0.5. Blocks: cnnkit.nn.dense.
"""
from __future__ import annotations

import re
from collections import OrderedDict

from torch import nn

from ..nn.act import ActLayer, create_act
from ..nn.dense import DenseBlock, Transition
from ..nn.norm import NormLayer, get_norm_layer
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

PAPER = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"

# The 14 findings of ChestX-ray14 (Wang et al., 2017), in the order CheXNet reports them.
CHESTXRAY14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)


class DenseNet(ClassifierModel):
    """One configurable DenseNet-BC: growth rate k, layers per block, stem width, bottleneck factor.

    Channels: a block adds k per layer; a transition halves. DenseNet-121 (k=32, (6, 12, 24, 16)):
    64 -> 256 -> 128 -> 512 -> 256 -> 1024 -> 512 -> 1024.

    drop_rate: dropout before the classifier (cnnkit's usual meaning); layer_drop_rate: dropout
    after each dense layer's 3x3 conv, the paper's choice when training without augmentation
    (torchvision calls it drop_rate). memory_efficient: gradient checkpointing inside dense layers.
    small_input (28-32 px): a 3x3 stride-1 stem conv and no max-pool, so 32 px ends at 4x4 (the
    paper's CIFAR DenseNets instead have three blocks and a 16 / 2k-channel stem: not built here).
    """

    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 drop_rate: float = 0.0, layer_drop_rate: float = 0.0, memory_efficient: bool = False,
                 act_layer: ActLayer = "relu", norm_layer: NormLayer = "batch", global_pool: str = "avg"):
        super().__init__()
        self.num_classes = num_classes
        norm = get_norm_layer(norm_layer)
        k, s, p = (3, 1, 1) if small_input else (7, 2, 3)
        stem = [
            ("conv0", nn.Conv2d(in_chans, num_init_features, k, s, p, bias=False)),  # (B, 64, H/2, W/2)
            ("norm0", norm(num_init_features)),
            ("act0", create_act(act_layer)),  # not in place: feature_info names act0 / act5 (hooks)
            ("pool0", nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)),  # (B, 64, H/4, W/4)
        ]
        self.features = nn.Sequential(OrderedDict(stem))
        self.feature_info = [dict(num_chs=num_init_features, reduction=s, module="features.act0")]
        reduction = s * s  # conv0, then pool0 with the same stride
        chs = num_init_features
        layer_kwargs = dict(bn_size=bn_size, drop_rate=layer_drop_rate, memory_efficient=memory_efficient,
                            norm_layer=norm_layer, act_layer=act_layer)
        for i, n in enumerate(block_config):
            block = DenseBlock(n, chs, growth_rate, **layer_kwargs)
            self.features.add_module(f"denseblock{i + 1}", block)
            chs = block.out_channels
            if i < len(block_config) - 1:
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.denseblock{i + 1}"))
                self.features.add_module(f"transition{i + 1}", Transition(chs, chs // 2, norm_layer, act_layer))
                chs, reduction = chs // 2, reduction * 2
        self.features.add_module("norm5", norm(chs))
        self.features.add_module("act5", create_act(act_layer))
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module="features.act5"))
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, pool=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.features(x)  # (B, C, H/32, W/32), after the final norm + act


def _densenet(name: str, growth_rate: int, block_config, num_init_features: int, num_classes: int, in_chans: int,
              cfg_extra: dict | None = None, tv_name: str | None = None, **kwargs) -> DenseNet:
    model = DenseNet(growth_rate, block_config, num_init_features, num_classes=num_classes, in_chans=in_chans,
                     **kwargs)
    size = 32 if kwargs.get("small_input") else 224
    extra = dict(paper=PAPER, growth_rate=growth_rate, block_config=tuple(block_config),
                 notes="DenseNet-BC (bottleneck + compression 0.5) as in the paper's ImageNet models")
    extra.update(cfg_extra or {})
    cfg = make_cfg((3, size, size), first_conv="features.conv0", classifier="head.fc", **extra)
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=tv_name or name)
    return model


# Table 1 of the paper: growth rate k, dense layers per block, stem width (2k).
@register_model
def densenet121(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """DenseNet-121: k=32, blocks (6, 12, 24, 16), 8.0 M parameters."""
    return _densenet("densenet121", 32, (6, 12, 24, 16), 64, num_classes, in_chans, **kwargs)


@register_model
def densenet161(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """DenseNet-161: k=48, blocks (6, 12, 36, 24), stem 96, 28.7 M parameters."""
    return _densenet("densenet161", 48, (6, 12, 36, 24), 96, num_classes, in_chans, **kwargs)


@register_model
def densenet169(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """DenseNet-169: k=32, blocks (6, 12, 32, 32), 14.1 M parameters."""
    return _densenet("densenet169", 32, (6, 12, 32, 32), 64, num_classes, in_chans, **kwargs)


@register_model
def densenet201(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """DenseNet-201: k=32, blocks (6, 12, 48, 32), 20.0 M parameters."""
    return _densenet("densenet201", 32, (6, 12, 48, 32), 64, num_classes, in_chans, **kwargs)


@register_model
def chexnet(num_classes: int = 14, in_chans: int = 3, growth_rate: int = 32, block_config=(6, 12, 24, 16),
            num_init_features: int = 64, **kwargs):
    """CheXNet: DenseNet-121 with one output per ChestX-ray14 finding (multi-label).

    The head returns logits, one per finding; the findings are not exclusive, so each is a separate
    yes/no: train with BCEWithLogitsLoss (sigmoid + binary cross-entropy in one stable op) and
    predict with sigmoid(logits) > threshold -- never softmax. The paper's final layer is a sigmoid;
    here it is left to the loss / prediction step. Paper: 224 px images, ImageNet-initialised
    backbone (`load_torchvision_weights` with a torchvision densenet121 state dict loads the
    backbone and keeps this fresh 14-way head), Adam lr 1e-3. X-rays are grey: replicate the channel
    (mean/std ImageNet) or pass in_chans=1. The multilabel task trains it with the paper's weighted
    BCE (`default_cfg["loss"]`). growth_rate / block_config / num_init_features make a smaller
    DenseNet-BC with the same head and task, e.g. `{growth_rate: 16, block_config: [3, 6, 12, 8],
    num_init_features: 32}` for CPU runs on the shapes scenes.
    """
    extra = dict(paper="Rajpurkar et al., CheXNet: Radiologist-Level Pneumonia Detection on Chest X-Rays with "
                       "Deep Learning, 2017", multi_label=True, task="multilabel", label_names=CHESTXRAY14_LABELS,
                 loss="weighted_bce",
                 notes="DenseNet-121; the head outputs logits, sigmoid is applied by the loss / at prediction")
    if num_classes != len(CHESTXRAY14_LABELS):
        extra["label_names"] = None
    return _densenet("chexnet", growth_rate, tuple(block_config), num_init_features, num_classes, in_chans,
                     cfg_extra=extra, tv_name="densenet121", **kwargs)


# Old torchvision checkpoints named dense-layer modules "norm.1", "conv.2", ... (no longer valid names).
_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _rename(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        m = _LEGACY.match(k)
        k = m.group(1) + m.group(2) if m else k
        out["head.fc." + k[len("classifier."):] if k.startswith("classifier.") else k] = v
    return out


@register_tv_converter("densenet121", "densenet161", "densenet169", "densenet201")
def _from_torchvision(sd, model):
    """Module names follow torchvision's (current and legacy "norm.1"-style keys); classifier -> head.fc."""
    return _rename(sd)


@register_tv_converter("chexnet")
def _chexnet_from_torchvision(sd, model):
    """An ImageNet DenseNet-121 backbone; a classifier of another shape is replaced by the model's own (fresh) head."""
    sd, own = _rename(sd), model.state_dict()
    for k in ("head.fc.weight", "head.fc.bias"):
        if k in sd and k in own and sd[k].shape != own[k].shape:
            sd[k] = own[k]
    return sd
