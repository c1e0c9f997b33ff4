"""AlexNet: exact torchvision parameter count, weight loading with identical outputs, the small-input
stem and the stage metadata."""
import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model

from models._zoo_helpers import (assert_same_output, check_feature_info, check_small_input_shapes, n_params,
                                 tv_pair)


def test_param_count_equals_torchvision():
    with torch.device("meta"):
        ours, ref = create_model("alexnet", num_classes=1000), tvm.alexnet(weights=None)
    assert n_params(ours) == n_params(ref) == 61_100_840
    convs = [l for l in ours.features if isinstance(l, torch.nn.Conv2d)]
    assert len(convs) == 5 and convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)  # 5 conv + 3 FC


def test_torchvision_weights_same_output():
    ours, ref = tv_pair("alexnet")
    x = torch.randn(1, 3, 64, 64)  # 63 px is the smallest size the ImageNet stem accepts
    assert_same_output(ours, ref, x)


def test_feature_info_and_cfg():
    with torch.device("meta"):
        m = create_model("alexnet", num_classes=10)
        check_feature_info(m, torch.empty(1, 3, 224, 224), exact=False)  # unpadded 3x3/2 pools: 27, not 28
        assert m.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 256, 6, 6)
    assert [(f["num_chs"], f["reduction"]) for f in m.feature_info] == [(64, 8), (192, 16), (256, 32)]
    cfg = m.default_cfg
    assert cfg["architecture"] == cfg["tv_name"] == "alexnet" and "2012" in cfg["paper"]
    modules = dict(m.named_modules())
    assert modules[cfg["first_conv"]] is m.features[0] and modules[cfg["classifier"]] is m.get_classifier()


@pytest.mark.parametrize("size, last", [(32, 3), (28, 2)])
def test_small_input(size, last):
    m = create_model("alexnet", num_classes=10, in_chans=1, small_input=True, act_layer="elu").eval()
    assert m.features[0].kernel_size == (3, 3) and m.features[0].stride == (1, 1)
    assert m.head.fc1.in_features == 256 and m.head.fc1.out_features == 512
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 256, last, last)
        assert m(x).shape == (2, 10)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 512)
    assert isinstance(m.features[1], torch.nn.ELU)
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8] and m.default_cfg["input_size"] == (1, 32, 32)
    with pytest.raises(RuntimeError):  # without small_input 32 px is too small for the 11x11/4 stem
        with torch.device("meta"):
            create_model("alexnet")(torch.empty(1, 3, 32, 32))


def test_dropout_train_only_and_reset():
    m = create_model("alexnet", num_classes=10, small_input=True)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x))
        m.train()
        assert not torch.allclose(m.forward_head(m.forward_features(x), pre_logits=True),
                                  m.forward_head(m.forward_features(x), pre_logits=True))
    m.reset_classifier(5)
    assert m.get_classifier().out_features == 5 and m.default_cfg["num_classes"] == 5


@pytest.mark.parametrize("name", ["alexnet"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    check_small_input_shapes(name, size)
