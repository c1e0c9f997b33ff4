"""Analytic receptive fields (graph + recurrence) against the autograd measurement, on chains,
dilated stacks, ResNet, an inception-like block with offset branches and a dense block."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnkit.analysis import empirical_receptive_field, receptive_field, summary
from cnnkit.analysis.geometry import input_geo, union, window


class Inception(nn.Module):
    """Parallel 1x1 / 3x3 / 5x5 / pool branches, plus an even 4x4 branch padded on one side only:
    its region is offset, so the merged rf (13) is the union, more than the largest branch (11)."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.b1 = nn.Conv2d(c, c, 1)
        self.b3 = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 5, padding=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, c, 1))
        self.b4 = nn.Conv2d(c, c, 4)
        self.head = nn.Conv2d(5 * c, c, 3, stride=2, padding=1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x), self.b4(F.pad(x, (0, 3, 0, 3)))], 1)
        return self.head(F.relu(y))


class Dense(nn.Module):
    """Two dense blocks (each layer sees the concat of all earlier ones) around a transition."""

    def __init__(self, c=4, g=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * g), nn.ReLU(), nn.Conv2d(c + i * g, g, 3, padding=1))
            for i in range(3))
        self.trans = nn.Sequential(nn.Conv2d(c + 3 * g, c, 1), nn.AvgPool2d(2))
        self.block2 = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Conv2d(c + i * g, g, 3, padding=1)) for i in range(2))

    def forward(self, x):
        x = self.stem(x)
        for layer in self.block1:
            x = torch.cat([x, layer(x)], 1)
        x = self.trans(x)
        for layer in self.block2:
            x = torch.cat([x, layer(x)], 1)
        return x


def _plain():  # even kernels and strided padding included
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 5, stride=2, padding=2),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 4, stride=2, padding=1),
                         nn.AvgPool2d(3, stride=1), nn.Conv2d(4, 4, 2))


def _dilated():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                         nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.Conv2d(8, 8, 3, padding=4, dilation=4), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=8, dilation=8), nn.MaxPool2d(3, stride=2, padding=1, dilation=2))


def _resnet18_layer3():
    r = torchvision.models.resnet18(weights=None)
    return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)


CASES = {  # name: (model builder, input size, analytic rf worked out by hand)
    "plain": (_plain, 96, 48),
    "dilated": (_dilated, 160, 65),
    "resnet18_layer3": (_resnet18_layer3, 224, 211),
    "inception": (Inception, 64, 17),
    "dense": (Dense, 64, 18),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_analytic_equals_empirical(name):
    make, size, by_hand = CASES[name]
    model = make()
    s = summary(model, (3, size, size))
    rf, jump, start = s.output_rf
    assert rf == by_hand and not s.output_rf_global and all(r.rf_exact for r in s.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the region must not touch the border
        extent, region = empirical_receptive_field(model, (3, size, size), return_region=True)
    assert extent == rf
    # and the region sits where `start + position * jump` says (central output position)
    centre = [s_ // 2 for s_ in s.output_shape[2:]]
    for (lo, hi), o in zip(region, centre):
        assert hi - lo + 1 == rf
        assert (lo + hi) / 2 == start + o * jump


def test_known_architectures():
    """Textbook values: AlexNet pool5 sees 195 px, VGG16 conv5_3 196 and pool5 212, ResNet-50 conv5 427."""
    with torch.device("meta"):
        alex, vgg, r50 = (torchvision.models.alexnet(), torchvision.models.vgg16(),
                          torchvision.models.resnet50())
    assert receptive_field(alex.features, (3, 224, 224), device="meta")["12"] == (195, 32, 31)
    vgg_rf = receptive_field(vgg.features, (3, 224, 224), device="meta")
    assert vgg_rf["28"][:2] == (196, 16) and vgg_rf["30"][:2] == (212, 32)
    r50_rf = receptive_field(r50, (3, 224, 224), device="meta")
    assert r50_rf["layer4.2.relu@1"][:2] == (427, 32)
    assert r50_rf["avgpool"] == (224, None, None) and r50_rf["fc"] == (224, None, None)  # global


def test_rows_and_explain_follow_the_recurrence():
    s = summary(Inception(), (3, 64, 64))
    rows = {r.name: r for r in s.rows}
    assert (rows["b5.2"].rf, rows["b4"].rf, rows["b4"].start) == (11, 9, 3)
    assert rows["cat"].rf == 13  # union of [-5, 5] and [-1, 7]: not max(11, 9)
    assert "union" in rows["cat"].explain and "= 13" in rows["cat"].explain
    assert rows["head"].explain.endswith("RF = 13 + (3−1)·2 = 17; jump = 2·2 = 4")


def test_union_geometry():
    g = input_geo((32, 32))
    a = window(g, (-2, -1), (3, 3), (1, 1), (1, 1), (1, 1), (32, 32))  # centred, [-1, 1]
    b = window(g, (-2, -1), (2, 2), (1, 1), (0, 0), (1, 1), (31, 31))  # offset, [0, 1]
    assert a.rf == (3, 3) and b.rf == (2, 2) and b.start == (0.5, 0.5)
    assert union([a, b], (32, 32)).rf == (3, 3)
    c = window(g, (-2, -1), (3, 3), (1, 1), (0, 0), (1, 1), (30, 30))  # [0, 2]
    u = union([a, c], (32, 32))
    assert u.rf == (4, 4) and u.start == (0.5, 0.5)


def test_global_and_flattened_layers():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    s = summary(model, (1, 16, 16))
    conv, flat, fc = s.rows
    assert (conv.rf, conv.jump, flat.rf, flat.jump) == (3, 1, 3, None)  # flattened: positions dropped
    assert fc.rf_global and fc.rf == 16 and s.output_rf_global
    assert "RF = global" in fc.explain


def test_hook_fallback_is_labelled():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1)

        def forward(self, x):
            x = self.a(x)
            if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace this
                x = self.b(x)
            return x

    s = summary(Untraceable(), (3, 32, 32))
    assert not s.traced and [r.rf for r in s.rows] == [3, 5]
    assert "sequential approximation" in s.render() and "sequential approximation" in s.render("json")


def test_empirical_warns_when_clipped():
    with pytest.warns(UserWarning, match="clipped"):
        assert empirical_receptive_field(_plain(), (3, 40, 40)) < 48
