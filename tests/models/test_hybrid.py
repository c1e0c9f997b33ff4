"""CNN-transformer hybrid: the documented design (parameter formula, strides, token grid), the
conv-stage and token feature_info entries, and training signal through both halves."""
import pytest
import torch
from torch import nn

from cnnkit.models import create_model
from cnnkit.models.hybrid import ConvStem
from cnnkit.registry import CnnkitError


def expected_params(widths, in_chans, D, depth, n_tokens, num_classes):
    """The design in hybrid.py's docstring, counted by hand."""
    stem, prev = 0, in_chans
    for w in widths:  # [3x3 conv (no bias) + BN] twice per stage
        stem += prev * w * 9 + 2 * w + w * w * 9 + 2 * w
        prev = w
    stem += prev * D + D  # 1x1 projection to the token width
    block = 12 * D * D + 13 * D  # qkv 3D^2+3D, proj D^2+D, MLP 8D^2+5D, two LayerNorms 4D
    return stem + D + (1 + n_tokens) * D + depth * block + 2 * D + D * num_classes + num_classes


def test_parameter_count_matches_design():
    m = create_model("hybrid_vit", num_classes=10, small_input=True)
    got = sum(p.numel() for p in m.parameters())
    assert got == expected_params((32, 64, 128, 256), 3, 192, 6, 8 * 8, 10)
    assert 3.5e6 < got < 4.5e6  # "small by default"


def test_small_input_grid_and_feature_info():
    torch.manual_seed(0)
    m = create_model("hybrid_vit", num_classes=10, small_input=True).eval()
    assert m.patch_embed.reduction == 4 and m.grid == (8, 8)
    outs = {}
    hooks = [m.get_submodule(f["module"]).register_forward_hook(lambda mod, i, o, k=f["module"]: outs.update({k: o}))
             for f in m.feature_info]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = m.forward_features(x)
        logits = m.forward_head(tokens)
    for h in hooks:
        h.remove()
    assert tokens.shape == (2, 65, 192) and logits.shape == (2, 10)
    *conv_info, tok_info = m.feature_info
    assert [(f["num_chs"], f["reduction"]) for f in conv_info] == [(32, 1), (64, 2), (128, 4), (256, 4)]
    for f in conv_info:  # CNN stages: NCHW maps at the stated stride
        assert outs[f["module"]].shape == (2, f["num_chs"], 32 // f["reduction"], 32 // f["reduction"])
    assert tok_info["grid"] == (8, 8) and outs[tok_info["module"]].shape == (2, 65, 192)
    assert m.tokens_to_map(tokens).shape == (2, 192, 8, 8)


def test_imagenet_stem_is_stride_16_and_cfg():
    m = create_model("hybrid_vit", num_classes=1000).eval()
    assert m.patch_embed.reduction == 16 and m.grid == (14, 14)
    cfg = m.default_cfg
    assert cfg["architecture"] == "hybrid_vit" and cfg["tv_name"] is None and cfg["input_size"] == (3, 224, 224)
    assert isinstance(m.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 1 + 16, 192)


def test_stem_knobs_and_errors():
    stem = ConvStem(1, 48, widths=(16, 32, 64), strides=(2, 2, 2), act_layer="gelu", norm_layer="group")
    assert stem.reduction == 8 and stem(torch.randn(1, 1, 32, 32)).shape == (1, 48, 4, 4)
    assert isinstance(stem.stages[0][0].act, nn.GELU) and isinstance(stem.stages[0][0].bn, nn.GroupNorm)
    with pytest.raises(CnnkitError, match="patch_size"):
        create_model("hybrid_vit", patch_size=16)
    with pytest.raises(CnnkitError):
        create_model("hybrid_vit", act_layer="no_such_act")


def test_gradients_reach_stem_and_transformer():
    torch.manual_seed(0)
    m = create_model("hybrid_vit", num_classes=4, in_chans=1, small_input=True, depth=2).train()
    loss = nn.functional.cross_entropy(m(torch.randn(2, 1, 32, 32)), torch.tensor([0, 3]))
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
