"""ResNet (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016; arXiv 2015).

Stem (7x7/2 conv, 3x3/2 max-pool) -> four stages of residual blocks (64, 128, 256, 512 planes;
stages 2-4 start with stride 2) -> global average pool -> linear. ResNet-18/34 use basic blocks
(two 3x3 convs), ResNet-50/101/152 bottleneck blocks (1x1, 3x3, 1x1 x4). Blocks: cnnkit.nn.residual.
"""
from __future__ import annotations

from torch import nn

from ..nn.act import ActLayer, create_act
from ..nn.norm import NormLayer, get_norm_layer
from ..nn.residual import BasicBlock, Bottleneck, make_res_stage
from ..registry import register_model
from ._base import ClassifierHead, ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter

PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv 2015)"
V15_NOTE = ("ResNet v1.5 (as torchvision): bottleneck blocks stride on the 3x3 conv, the paper strides on the first "
            "1x1; projection shortcuts (option B) only where the shape changes")


class ResNet(ClassifierModel):
    """One configurable ResNet: `block` and `layers` (blocks per stage) pick the depth.

    Departure from the paper: ResNet v1.5, like torchvision -- a down-sampling bottleneck block has
    its stride on the 3x3 conv, not on the first 1x1 conv (so the 1x1 sees every input position;
    about +0.5% top-1 for a little more compute). Basic blocks are the same in both.

    small_input: a 3x3 stride-1 stem conv and no max-pool, for 28-32 px images (CIFAR, MNIST): the
    ImageNet stem would shrink 32 px to 8 px before the first stage. The last map is then 4x4.
    zero_init_last: gamma = 0 in the last norm of every block, so each block starts as the identity.
    `groups` / `width_per_group` give ResNeXt and wide ResNets (bottleneck blocks only).

    replace_stride_with_dilation: three flags for stages 2-4 (torchvision's semantics, for dense
    prediction): a flagged stage keeps stride 1 and dilates its 3x3 convs by the stride it dropped,
    times the dilation before it; its first block keeps the previous dilation. (False, True, True)
    gives output stride 8, (False, False, True) 16; feature_info then reports the kept strides.
    Module and parameter names do not change, so torchvision's weights still load.
    """

    def __init__(self, block: type = BasicBlock, layers=(2, 2, 2, 2), num_classes: int = 1000, in_chans: int = 3,
                 small_input: bool = False, drop_rate: float = 0.0, act_layer: ActLayer = "relu",
                 norm_layer: NormLayer = "batch", zero_init_last: bool = False, groups: int = 1,
                 width_per_group: int = 64, stem_width: int = 64, global_pool: str = "avg",
                 replace_stride_with_dilation=(False, False, False)):
        super().__init__()
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 flags (stages 2-4), got "
                             f"{replace_stride_with_dilation!r}")
        self.num_classes = num_classes
        if small_input:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)  # (B, 64, H, W)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)  # (B, 64, H/2, W/2)
        self.bn1 = get_norm_layer(norm_layer)(stem_width)
        self.act1 = create_act(act_layer)  # not in place: feature_info names it, hooks may read it
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)  # (B, 64, H/4, W/4)

        stem_stride = 1 if small_input else 2  # of conv1, and again of the max-pool
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module="act1")]
        reduction = stem_stride * stem_stride
        block_kwargs = dict(groups=groups, base_width=width_per_group, norm_layer=norm_layer, act_layer=act_layer)
        in_chs, dilation = stem_width, 1
        for i, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            stride, first_dilation = 1 if i == 0 else 2, dilation
            if i > 0 and replace_stride_with_dilation[i - 1]:
                stride, dilation = 1, dilation * 2
            self.add_module(f"layer{i + 1}", make_res_stage(block, in_chs, planes, depth, stride, dilation=dilation,
                                                            first_dilation=first_dilation, **block_kwargs))
            in_chs, reduction = planes * block.expansion, reduction * stride
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool=global_pool, drop_rate=drop_rate)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He (Kaiming) init for ReLU nets, fan-out mode as torchvision
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def forward_features(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 64*e, H/4, W/4)
        x = self.layer2(x)  # (B, 128*e, H/8, W/8)
        x = self.layer3(x)  # (B, 256*e, H/16, W/16)
        return self.layer4(x)  # (B, 512*e, H/32, W/32); e = 1 (basic) or 4 (bottleneck)


def _resnet(name: str, block: type, layers, num_classes: int, in_chans: int, **kwargs) -> ResNet:
    model = ResNet(block, layers, num_classes, in_chans, **kwargs)
    size = 32 if kwargs.get("small_input") else 224
    cfg = make_cfg((3, size, size), first_conv="conv1", classifier="head.fc", paper=PAPER, notes=V15_NOTE,
                   layers=tuple(layers), block=block.__name__)
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture=name, tv_name=name)
    return model


# Table 1 of the paper: blocks per stage (conv2_x .. conv5_x).
@register_model
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """ResNet-18: basic blocks (2, 2, 2, 2), 11.7 M parameters."""
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """ResNet-34: basic blocks (3, 4, 6, 3), 21.8 M parameters."""
    return _resnet("resnet34", BasicBlock, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6 M parameters."""
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model
def resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.5 M parameters."""
    return _resnet("resnet101", Bottleneck, (3, 4, 23, 3), num_classes, in_chans, **kwargs)


@register_model
def resnet152(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 60.2 M parameters -- the guide's "commonly used" depth."""
    return _resnet("resnet152", Bottleneck, (3, 8, 36, 3), num_classes, in_chans, **kwargs)


@register_tv_converter("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
def _from_torchvision(sd, model):
    """Module names follow torchvision's; only the classifier moves: fc.* -> head.fc.*"""
    return {("head." + k if k.startswith("fc.") else k): v for k, v in sd.items()}
