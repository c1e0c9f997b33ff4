"""Swin: parameter counts and outputs against torchvision (incl. sizes smaller than the window),
NCHW feature interface, small inputs."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.nn.window_attention import WindowAttention, relative_position_index
from cnnkit.registry import CnnkitError

from models._zoo_helpers import n_params, random_state


def materialise(model: nn.Module) -> nn.Module:
    model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.relative_position_index = relative_position_index(m.window_size)
    return model


@pytest.mark.parametrize("name", ["swin_t", "swin_s", "swin_b"])
def test_param_count_matches_torchvision(name):
    with torch.device("meta"):
        ours, ref = create_model(name, num_classes=1000), getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(ref)
    assert ours.default_cfg["tv_name"] == name


def test_swin_t_count():
    with torch.device("meta"):
        assert n_params(create_model("swin_t", num_classes=1000)) == 28_288_354


@pytest.fixture(scope="module")
def swin_pair():
    with torch.device("meta"):
        ref = torchvision.models.swin_t()
        ours = create_model("swin_t", num_classes=1000)
    sd = random_state(ref)
    load_torchvision_weights(materialise(ours), sd)
    return ours.eval(), ref.eval()


# 64: maps 16, 8, 4, 2 (the last two smaller than the 7x7 window: padded, no shift);
# 72: maps 18, 9, 5, 3 (odd sides through patch merging, padded shifted windows)
@pytest.mark.parametrize("size", [64, 72])
def test_outputs_match_torchvision_swin_t(swin_pair, size):
    ours, ref = swin_pair
    torch.manual_seed(size)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = ours.forward_features(x)
        logits = ours.forward_head(feats)
        ref_feats = ref.permute(ref.norm(ref.features(x)))  # torchvision's NHWC features, as NCHW
        expected = ref(x)
    assert feats.shape == (1, 768, -(-size // 32), -(-size // 32))
    assert logits.abs().max() > 0.1
    torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_feature_info_modules_emit_nchw(swin_pair):
    ours, _ = swin_pair
    outs = {}
    hooks = [ours.get_submodule(f["module"]).register_forward_hook(lambda m, i, o, k=f["module"]: outs.update({k: o}))
             for f in ours.feature_info]
    with torch.no_grad():
        ours(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert [f["num_chs"] for f in ours.feature_info] == [96, 192, 384, 768]
    for f in ours.feature_info:
        assert outs[f["module"]].shape == (1, f["num_chs"], 64 // f["reduction"], 64 // f["reduction"])


def test_shift_alternates_and_small_input():
    m = create_model("swin_t", num_classes=10, small_input=True, depths=(2, 2, 2, 2), embed_dim=24).eval()
    shifts = [b.attn.shift_size for s in m.stages for b in s.blocks]
    assert shifts == [0, 2] * 4  # window 4 with small_input: shift 2 on every second block
    assert m.patch_embed.proj.stride == (2, 2) and m.default_cfg["input_size"] == (3, 32, 32)
    assert m.default_cfg["tv_name"] is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 8 * 24, 2, 2)
        m.reset_classifier(3)
        assert m(x).shape == (2, 3)


def test_interface_cfg_and_errors():
    m = create_model("swin_t", num_classes=5, in_chans=1, depths=(1, 1, 1, 1), embed_dim=24)
    cfg = m.default_cfg
    assert isinstance(m.get_submodule(cfg["first_conv"]), nn.Conv2d) and m.patch_embed.proj.in_channels == 1
    assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
    assert m.head(torch.randn(2, 192, 2, 2), pre_logits=True).shape == (2, 192)
    assert m.default_cfg["tv_name"] is None  # the table was overridden: no longer torchvision's swin_t
    with pytest.raises(CnnkitError):
        create_model("swin_t", window=7)
