"""ShuffleNetV2 x0.5-x2.0 against torchvision: parameter counts, key mapping and outputs."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.nn.shuffle import ShuffleV2Block

from models._zoo_helpers import assert_same_logits, calibrate, n_params


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0"])
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours, tv = create_model(name, num_classes=1000), getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(tv)
    load_torchvision_weights(ours, tv.state_dict())  # every key and shape maps (meta: nothing is copied)
    if name == "shufflenet_v2_x1_0":
        assert n_params(ours) == 2_278_604
    assert [len(s) for s in ours.stages] == [4, 8, 4]
    assert all(isinstance(b, ShuffleV2Block) for s in ours.stages for b in s)


def test_x1_0_torchvision_weights_give_same_outputs():
    torch.manual_seed(0)
    tv = calibrate(torchvision.models.shufflenet_v2_x1_0())
    ours = load_torchvision_weights(create_model("shufflenet_v2_x1_0", num_classes=1000), tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    assert_same_logits(ours, tv, x, lambda x: tv.conv5(tv.stage4(tv.stage3(tv.stage2(tv.maxpool(tv.conv1(x)))))))
    assert [f["reduction"] for f in ours.feature_info] == [8, 16, 32, 32]
    assert [f["num_chs"] for f in ours.feature_info] == [116, 232, 464, 1024]


def test_small_input_has_no_stem_downsampling():
    m = create_model("shufflenet_v2_x0_5", num_classes=10, in_chans=1, small_input=True).eval()
    assert m.stem.conv.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 1024, 4, 4)  # total stride 8
        assert m(x).shape == (2, 10)
    assert [f["reduction"] for f in m.feature_info] == [2, 4, 8, 8]
    assert m.default_cfg["input_size"] == (1, 32, 32)
