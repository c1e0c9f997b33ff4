"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep CNNs", NeurIPS 2012).

Five convs (11x11/4, 5x5, three 3x3; overlapping 3x3/2 max-pools after the 1st, 2nd and 5th) and
three fully connected layers with dropout 0.5 -- with ReLU, dropout, data augmentation and GPU
training, the network that started the deep-learning era (top-5 error 26% -> 15.3%).
"""
from __future__ import annotations

from torch import nn

from ..nn.act import ActLayer, create_act
from ..registry import register_model
from ._base import ClassifierModel, adapt_cfg, make_cfg
from ._tv import register_tv_converter
from .vgg import MLPHead, rename_prefixes

# (out channels, kernel, stride, padding, max-pool after): torchvision's single-tower widths
# (Krizhevsky, "One weird trick...", 2014); the 2012 paper has 96, 256, 384, 384, 256 split over two GPUs.
ALEXNET_CFG = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
               (256, 3, 1, 1, True))


class AlexNet(ClassifierModel):
    """AlexNet as torchvision builds it (61.1 M parameters at 1000 classes).

    Departures from the 2012 paper: single-tower widths 64-192-384-256-256 instead of two GPU
    towers of 96-256-384-384-256, no local response normalisation, an adaptive 6x6 average pool
    before the classifier (any input size >= 63 px works). Dropout sits after fc6/fc7 as in the
    paper (torchvision applies it to their inputs; same weights, same eval output).

    small_input (28-32 px): the first conv becomes 3x3 stride 1 (11x11 stride 4 would leave 7x7
    after one layer and nothing after the pools): 32 -> 15 -> 7 -> 3 px; the head pools to 1x1 and
    has 512 hidden units (as VGG's small_input); `hidden` overrides the width.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 drop_rate: float = 0.5, act_layer: ActLayer = "relu", hidden: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        layers, self.feature_info = [], []
        chs, reduction = in_chans, 1
        for i, (out, k, s, p, pool) in enumerate(ALEXNET_CFG):
            if i == 0 and small_input:
                k, s, p = 3, 1, 1
            layers += [nn.Conv2d(chs, out, k, s, p), create_act(act_layer, inplace=True)]
            chs, reduction = out, reduction * s
            if pool:
                layers.append(nn.MaxPool2d(3, 2))  # overlapping pooling (paper, section 3.4)
                reduction *= 2
                self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.num_features = chs
        hidden = hidden or (512 if small_input else 4096)
        self.head = MLPHead(chs, num_classes, 1 if small_input else 6, hidden, drop_rate, act_layer)

    def forward_features(self, x):
        return self.features(x)  # (B, 256, ~H/32, ~W/32): 6x6 at 224 px


@register_model
def alexnet(num_classes: int = 1000, in_chans: int = 3, **kwargs):
    """AlexNet: 5 convs + 3 FC, 61.1 M parameters."""
    model = AlexNet(num_classes, in_chans, **kwargs)
    size = 32 if kwargs.get("small_input") else 224
    cfg = make_cfg((3, size, size), first_conv="features.0", classifier="head.fc",
                   paper="Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks, 2012",
                   notes="torchvision's single-tower variant (One weird trick, 2014): no LRN, no GPU split")
    model.default_cfg = adapt_cfg(cfg, in_chans, num_classes, architecture="alexnet", tv_name="alexnet")
    return model


# torchvision's classifier: 0 Dropout, 1 Linear, 2 ReLU, 3 Dropout, 4 Linear, 5 ReLU, 6 Linear
@register_tv_converter("alexnet")
def _from_torchvision(sd, model):
    return rename_prefixes(sd, {"classifier.1.": "head.fc1.", "classifier.4.": "head.fc2.",
                                "classifier.6.": "head.fc."})
