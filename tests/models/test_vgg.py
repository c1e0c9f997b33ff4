"""VGG-11...19 (with and without batch norm): the configuration table, exact torchvision parameter
counts, weight loading with identical outputs, the small-input head and the stage metadata."""
import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models.vgg import VGG_CFGS

from models._zoo_helpers import (assert_same_output, check_feature_info, check_small_input_shapes, n_params,
                                 tv_pair)

# torchvision's numbers at 1000 classes
PARAMS = {"vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
          "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours, ref = create_model(name, num_classes=1000), getattr(tvm, name)(weights=None)
    assert n_params(ours) == n_params(ref) == PARAMS[name]


@pytest.mark.parametrize("name, convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19_bn", 16)])
def test_configuration_table(name, convs):
    """VGG-n = (n - 3) convs, all 3x3 stride 1, + 3 FC layers; five max-pools."""
    with torch.device("meta"):
        m = create_model(name, num_classes=1000)
    conv_layers = [l for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert len(conv_layers) == convs and len(conv_layers) + 3 == int(name[3:5])
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in conv_layers)
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in m.features) == 5
    assert m.default_cfg["config"] == {11: "A", 13: "B", 16: "D", 19: "E"}[int(name[3:5])]
    assert [c.out_channels for c in conv_layers] == [v for v in VGG_CFGS[m.default_cfg["config"]] if v != "M"]
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in m.feature_info] == [64, 128, 256, 512, 512]


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_torchvision_weights_same_output(name):
    ours, ref = tv_pair(name)
    x = torch.randn(1, 3, 32, 32)  # the adaptive pool lets 32 px through
    assert_same_output(ours, ref, x, min_abs=1e-2)


def test_bn_variant_has_norms_and_metadata():
    with torch.device("meta"):
        m = create_model("vgg16_bn", num_classes=10)
        check_feature_info(m, torch.empty(1, 3, 64, 64))
    assert sum(isinstance(l, torch.nn.BatchNorm2d) for l in m.features) == 13
    cfg = m.default_cfg
    assert cfg["architecture"] == "vgg16_bn" and cfg["tv_name"] == "vgg16_bn" and "batch norm" in cfg["notes"]
    modules = dict(m.named_modules())
    assert modules[cfg["first_conv"]] is m.features[0] and modules[cfg["classifier"]] is m.get_classifier()


def test_small_input_head_and_interface():
    m = create_model("vgg11", num_classes=10, small_input=True, in_chans=1).eval()
    assert m.head.fc1.in_features == 512 and m.head.fc1.out_features == 512  # pool to 1x1, 512 hidden
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (2, 512, 1, 1)
        assert m(x).shape == (2, 10) and m.forward_head(feats, pre_logits=True).shape == (2, 512)
    assert m.default_cfg["input_size"] == (1, 32, 32)
    with torch.no_grad():  # 28 px (MNIST) survives the five pools too
        assert m.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 1, 1)
    m.reset_classifier(4)
    assert m.get_classifier().out_features == 4 and m.num_classes == 4
    with torch.device("meta"):
        assert create_model("vgg11", small_input=True, hidden=256).head.fc2.out_features == 256
        assert n_params(create_model("vgg16", num_classes=10, small_input=True)) < 16_000_000


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    check_small_input_shapes(name, size)
