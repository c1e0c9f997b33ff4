"""ResNet-18...152: exact torchvision parameter counts, weight loading with identical outputs,
the v1.5 stride placement, the small-input stem and the stage metadata."""
import pytest
import torch
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.resnet import ResNet
from cnnkit.nn.residual import Bottleneck
from cnnkit.registry import CnnkitError

from models._zoo_helpers import (assert_same_output, check_backward_hooks, check_feature_info,
                                 check_small_input_shapes, n_params, tv_pair)

# torchvision's numbers at 1000 classes
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "resnet101": 44_549_160, "resnet152": 60_192_808}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours, ref = create_model(name, num_classes=1000), getattr(tvm, name)(weights=None)
    assert n_params(ours) == n_params(ref) == PARAMS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_same_output(name):
    ours, ref = tv_pair(name)
    x = torch.randn(1, 3, 32, 32)
    assert_same_output(ours, ref, x, min_abs=1e-2)


def test_v15_stride_on_3x3_and_cfg():
    m = create_model("resnet50", num_classes=10)
    first = m.layer2[0]
    assert isinstance(first, Bottleneck) and first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert "v1.5" in m.default_cfg["notes"] and "1x1" in (ResNet.__doc__ or "")
    cfg = m.default_cfg
    assert cfg["architecture"] == "resnet50" and cfg["tv_name"] == "resnet50" and cfg["num_classes"] == 10
    assert cfg["layers"] == (3, 4, 6, 3)
    modules = dict(m.named_modules())
    assert modules[cfg["first_conv"]] is m.conv1 and modules[cfg["classifier"]] is m.get_classifier()


def test_small_input_stem_and_feature_info():
    m = create_model("resnet18", num_classes=10, small_input=True).eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert [f["reduction"] for f in m.feature_info] == [1, 1, 2, 4, 8]
    assert m.default_cfg["input_size"] == (3, 32, 32)
    with torch.device("meta"):  # shapes only: no memory, no compute
        check_feature_info(create_model("resnet18", small_input=True), torch.empty(1, 3, 32, 32))
        big = create_model("resnet50", num_classes=10)
        assert [f["reduction"] for f in big.feature_info] == [2, 4, 8, 16, 32]
        check_feature_info(big, torch.empty(1, 3, 64, 64))


def test_head_interface_and_options():
    m = create_model("resnet18", num_classes=7, in_chans=1, zero_init_last=True, act_layer="leaky_relu").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert m(x).shape == (2, 7)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 512)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (m.layer1, m.layer4) for b in layer)
    assert isinstance(m.act1, torch.nn.LeakyReLU) and m.default_cfg["mean"] == (sum((0.485, 0.456, 0.406)) / 3,)
    m.reset_classifier(3)
    assert m.get_classifier().out_features == 3 and m.num_classes == 3


def test_user_errors():
    with pytest.raises(CnnkitError, match="resnet"):
        create_model("resnet51")
    with pytest.raises(CnnkitError, match="unexpected keyword"):
        create_model("resnet18", nonsense=1)
    with pytest.raises(CnnkitError, match="do not fit"):  # a 1000-class state dict into a 10-class model
        with torch.device("meta"):
            sd = tvm.resnet18(weights=None).state_dict()
        load_torchvision_weights(create_model("resnet18", num_classes=10), sd)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    check_small_input_shapes(name, size)


def test_feature_modules_accept_backward_hooks():
    """Grad-CAM style full backward hooks work on every feature_info module (none is an in-place op)."""
    m = create_model("resnet18", num_classes=4, small_input=True).eval()
    check_backward_hooks(m, torch.randn(1, 3, 32, 32))
