"""GoogLeNet: exact torchvision parameter counts (with and without the auxiliary heads), weight loading
with identical outputs, auxiliary logits in training only and the 0.3-weighted auxiliary loss."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm

from cnnkit.models import create_model
from cnnkit.models.googlenet import INCEPTION_CFG, GoogLeNetOutputs, loss_with_aux, split_aux
from cnnkit.nn.inception import inception_conv_params

from models._zoo_helpers import (assert_same_output, check_feature_info, check_small_input_shapes, n_params,
                                 tv_pair)


@pytest.mark.parametrize("aux, expected", [(False, 6_624_904), (True, 13_004_888)])
def test_param_count_equals_torchvision(aux, expected):
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = create_model("googlenet", num_classes=1000, aux_logits=aux)
        ref = tvm.googlenet(weights=None, aux_logits=aux, init_weights=True)
    assert n_params(ours) == n_params(ref) == expected
    if not aux:  # the guide: "12x fewer parameters than AlexNet" (paper: ~5 M without batch norm); here 9.2x
        with torch.device("meta"):
            assert n_params(create_model("alexnet", num_classes=1000)) > 9 * n_params(ours)


def test_paper_5x5_branch_adds_exactly_the_extra_weights():
    with torch.device("meta"):
        tv_like = create_model("googlenet", num_classes=1000, aux_logits=False)
        paper = create_model("googlenet", num_classes=1000, aux_logits=False, branch3_kernel=5)
    # in_chs=0 leaves only the 3x3 and "5x5" conv weights of each module
    extra = sum(inception_conv_params(0, *row, kernel_5x5=5) - inception_conv_params(0, *row, kernel_5x5=3)
                for row in INCEPTION_CFG.values())
    assert n_params(paper) - n_params(tv_like) == extra == 16 * sum(r[3] * r[4] for r in INCEPTION_CFG.values())
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)


def test_torchvision_weights_same_output():
    ours, ref = tv_pair("googlenet")  # both with auxiliary heads: their weights are mapped too
    x = torch.randn(1, 3, 32, 32)
    assert_same_output(ours, ref, x)


def test_aux_logits_in_training_and_weighted_loss():
    torch.manual_seed(0)
    m = create_model("googlenet", num_classes=5)  # 32 px is enough to reach both auxiliary heads
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    m.train()
    out = m(x)
    assert isinstance(out, GoogLeNetOutputs) and out.logits.shape == out.aux1.shape == out.aux2.shape == (2, 5)
    assert m.aux_loss_weight == 0.3 == m.default_cfg["aux_loss_weight"]
    logits, aux = split_aux(out)
    assert logits is out.logits and len(aux) == 2
    expected = (F.cross_entropy(out.logits, y)
                + 0.3 * (F.cross_entropy(out.aux1, y) + F.cross_entropy(out.aux2, y)))
    loss = loss_with_aux(out, y, F.cross_entropy, m.aux_loss_weight)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    no_grad = [k for k, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []  # every parameter, the auxiliary heads included, is trained
    # the main logits do not depend on the auxiliary heads: same as forward_head(forward_features)
    with torch.no_grad():
        m.head.drop.p = 0.0
        torch.manual_seed(1)
        main = m(x).logits
        torch.manual_seed(1)
        torch.testing.assert_close(main, m.forward_head(m.forward_features(x)))
    m.eval()
    with torch.no_grad():
        logits = m(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)  # eval: plain logits, no aux heads run
    assert split_aux(logits) == (logits, [])
    torch.testing.assert_close(loss_with_aux(logits, y, F.cross_entropy), F.cross_entropy(logits, y))


def test_no_aux_heads():
    m = create_model("googlenet", num_classes=3, aux_logits=False).train()
    out = m(torch.randn(2, 3, 32, 32))
    assert m.aux1 is None and m.aux2 is None and isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_feature_info_small_input_and_reset():
    with torch.device("meta"):
        check_feature_info(create_model("googlenet", num_classes=10), torch.empty(1, 3, 64, 64))
        small = create_model("googlenet", num_classes=10, small_input=True)
        check_feature_info(small, torch.empty(1, 3, 32, 32))
    assert [f["reduction"] for f in small.feature_info] == [1, 1, 2, 4, 8]
    assert small.conv1.conv.stride == (1, 1) and isinstance(small.maxpool1, torch.nn.Identity)
    assert small.forward_features(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 1024, 4, 4)
    cfg = small.default_cfg
    modules = dict(small.named_modules())
    assert modules[cfg["first_conv"]] is small.conv1.conv and modules[cfg["classifier"]] is small.get_classifier()
    small.reset_classifier(7)
    assert small.get_classifier().out_features == small.aux1.fc2.out_features == small.aux2.fc2.out_features == 7


@pytest.mark.parametrize("name", ["googlenet"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_all_variants_shapes(name, size):
    """small_input runs 28 px (MNIST) and 32 px (CIFAR) images through every variant (shapes on meta)."""
    check_small_input_shapes(name, size)
