"""Transformer blocks against PyTorch / torchvision oracles: patch embedding, multi-head
self-attention, the pre-norm block, stochastic depth, window partition, the shifted-window
mask, window attention and patch merging."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import swin_transformer as tv_swin

from cnnkit.nn.patch import PatchEmbed, patch_grid
from cnnkit.nn.transformer import Attention, DropPath, TokenHead, TransformerBlock
from cnnkit.nn.window_attention import (MASK_VALUE, PatchMerging, WindowAttention, relative_position_index,
                                        shifted_window_mask, window_partition, window_reverse)
from cnnkit.registry import CnnkitError

torch.manual_seed(0)


# ---- patch embedding -------------------------------------------------------------------------
def test_patch_embed_shapes_and_linear_equivalence():
    pe = PatchEmbed(3, 32, patch_size=16)
    x = torch.randn(2, 3, 64, 48)
    tokens = pe(x)
    assert tokens.shape == (2, (64 // 16) * (48 // 16), 32)  # N = (H/P)(W/P)
    # a P x P stride-P conv == one Linear on every flattened patch (unfold = cut the patches)
    patches = F.unfold(x, kernel_size=16, stride=16).transpose(1, 2)  # (B, N, C*P*P), row-major
    ref = patches @ pe.proj.weight.view(32, -1).T + pe.proj.bias
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
    pe.output_fmt = "NCHW"
    assert pe(x).shape == (2, 32, 4, 3)
    pe.output_fmt = "NHWC"
    assert pe(x).shape == (2, 4, 3, 32)


def test_patch_embed_norm_over_channels():
    pe = PatchEmbed(3, 8, patch_size=4, norm_layer=nn.LayerNorm, output_fmt="NCHW")
    y = pe(torch.randn(1, 3, 16, 16))
    assert y.shape == (1, 8, 4, 4)
    torch.testing.assert_close(y.mean(1), torch.zeros(1, 4, 4), atol=1e-5, rtol=0)  # normalised over D


def test_patch_grid():
    assert patch_grid(224, 16) == (14, 14) and patch_grid((64, 32), 4) == (16, 8)
    with pytest.raises(CnnkitError, match="multiple of the patch size"):
        patch_grid(30, 16)


# ---- multi-head self-attention -----------------------------------------------------------------
def test_attention_matches_nn_multihead_attention():
    D, H = 24, 4
    ours, ref = Attention(D, H).eval(), nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():  # same packed q, k, v layout
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 7, D)
    with torch.no_grad():
        out, weights = ref(x, x, x, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(ours(x), out, atol=1e-5, rtol=1e-5)
        attn = ours.attention_map(x)
    assert attn.shape == (3, H, 7, 7)
    torch.testing.assert_close(attn, weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, H, 7))


def test_attention_matches_explicit_softmax_formula():
    D, H = 16, 2
    a = Attention(D, H).eval()
    x = torch.randn(2, 5, D)
    q, k, v = (a.qkv(x).reshape(2, 5, 3, H, D // H).permute(2, 0, 3, 1, 4))
    w = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1)
    ref = a.proj((w @ v).transpose(1, 2).reshape(2, 5, D))
    torch.testing.assert_close(a(x), ref, atol=1e-5, rtol=1e-5)


def test_transformer_block_matches_pytorch_prenorm_encoder_layer():
    D, H = 32, 4
    ours = TransformerBlock(D, H, mlp_ratio=2.0).eval()
    ref = nn.TransformerEncoderLayer(D, H, dim_feedforward=2 * D, dropout=0.0, activation="gelu",
                                     layer_norm_eps=1e-6, batch_first=True, norm_first=True).eval()
    mapping = {"self_attn.in_proj_weight": "attn.qkv.weight", "self_attn.in_proj_bias": "attn.qkv.bias",
               "self_attn.out_proj.weight": "attn.proj.weight", "self_attn.out_proj.bias": "attn.proj.bias",
               "linear1.weight": "mlp.fc1.weight", "linear1.bias": "mlp.fc1.bias",
               "linear2.weight": "mlp.fc2.weight", "linear2.bias": "mlp.fc2.bias",
               "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
               "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias"}
    own = ours.state_dict()
    ref.load_state_dict({k: own[v] for k, v in mapping.items()})
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_drop_path_drops_whole_samples_and_is_identity_in_eval():
    dp = DropPath(0.3)
    x = torch.ones(4000, 5)
    y = dp.train()(x)
    rows = y[:, 0]
    assert torch.all((y == 0).all(1) | (y == 1 / 0.7).all(1))  # each sample: whole branch kept (rescaled) or dropped
    assert abs((rows == 0).float().mean().item() - 0.3) < 0.04
    assert torch.equal(dp.eval()(x), x)


def test_token_head_pre_logits_and_pools():
    x = torch.randn(2, 5, 8)
    head = TokenHead(8, 3).eval()
    assert torch.equal(head(x, pre_logits=True), x[:, 0])
    torch.testing.assert_close(head(x), head.fc(x[:, 0]))
    avg = TokenHead(8, 3, pool="avg")
    torch.testing.assert_close(avg(x, pre_logits=True), x[:, 1:].mean(1))
    head.reset(7)
    assert head(x).shape == (2, 7)


# ---- windows --------------------------------------------------------------------------------
def test_window_partition_reverse_round_trip():
    x = torch.randn(2, 14, 21, 5)
    w = window_partition(x, 7)
    assert w.shape == (2 * 2 * 3, 49, 5)
    torch.testing.assert_close(w[1], x[0, :7, 7:14].reshape(49, 5), rtol=0, atol=0)  # window (0, 1) of image 0
    assert torch.equal(window_reverse(w, 7, 14, 21), x)


def test_relative_position_index_brute_force():
    ws = 3
    idx = relative_position_index(ws)
    pos = [(i // ws, i % ws) for i in range(ws * ws)]
    ref = torch.tensor([[(yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1) for (yj, xj) in pos]
                        for (yi, xi) in pos])
    assert torch.equal(idx, ref)


def test_shifted_window_mask_matches_wrap_around_regions():
    H = W = 14
    ws, s = 7, 3
    mask = shifted_window_mask(H, W, ws, (s, s))
    assert mask.shape == (4, 49, 49)
    # brute force: in the rolled map a token is "wrapped" along a side iff it sits in the last `s` rows/cols;
    # inside one window two tokens may attend iff they agree on both wrap flags
    ids = torch.arange(H * W).view(1, H, W, 1).float()
    flat = window_partition(ids, ws).squeeze(-1).long()  # (nW, N) positions in the rolled map
    r, c = flat // W, flat % W
    key = (r >= H - s).long() * 2 + (c >= W - s).long()
    allowed = key[:, :, None] == key[:, None, :]
    assert torch.equal(mask == 0, allowed) and torch.all(mask[~allowed] == MASK_VALUE)
    assert torch.all(mask[0] == 0)  # the top-left window never wraps


def _probe(attn, x, src, dst):
    """Does changing the input at `src` change the output at `dst`?"""
    with torch.no_grad():
        y0 = attn(x)
        x2 = x.clone()
        x2[0, src[0], src[1]] += 5.0
        y1 = attn(x2)
    return not torch.allclose(y0[0, dst[0], dst[1]], y1[0, dst[0], dst[1]], atol=1e-6, rtol=0)


def test_shifted_window_mask_blocks_cross_region_attention():
    torch.manual_seed(1)
    x = torch.randn(1, 14, 14, 8)
    plain, shifted = WindowAttention(8, 2, 7, 0).eval(), WindowAttention(8, 2, 7, 3).eval()
    shifted.load_state_dict(plain.state_dict())
    # plain windows: no crossing of the border between rows/cols 6 and 7
    assert not _probe(plain, x, (7, 7), (6, 6)) and _probe(plain, x, (5, 5), (6, 6))
    # shifted windows straddle that border ...
    assert _probe(shifted, x, (7, 7), (6, 6))
    # ... and (0, 0) and (13, 13) land in the same rolled window but in different regions: masked
    assert not _probe(shifted, x, (13, 13), (0, 0)) and not _probe(shifted, x, (0, 0), (13, 13))
    assert _probe(shifted, x, (12, 12), (13, 13))  # same region: they do attend


@pytest.mark.parametrize("size,shift", [((14, 14), 3), ((10, 13), 3), ((2, 2), 3), ((9, 16), 0)])
def test_window_attention_matches_torchvision(size, shift):
    torch.manual_seed(2)
    ours = WindowAttention(16, 4, 7, shift).eval()
    ref = tv_swin.ShiftedWindowAttention(16, [7, 7], [shift, shift], 4).eval()
    with torch.no_grad():
        ours.relative_position_bias_table.normal_()  # make the bias matter
        sd = ours.state_dict()
        sd["relative_position_index"] = ref.relative_position_index
        ref.load_state_dict(sd)
        x = torch.randn(2, *size, 16)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_patch_merging_matches_torchvision_with_odd_sides():
    ours = PatchMerging(6)
    ref = tv_swin.PatchMerging(6)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 7, 6)
    y = ours(x)
    assert y.shape == (2, 3, 4, 12)
    torch.testing.assert_close(y, ref(x))
