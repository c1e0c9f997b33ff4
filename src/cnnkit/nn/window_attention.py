"""Swin Transformer pieces (Liu et al., 2021): window attention with a relative position bias,
the shifted-window block with its attention mask, and patch merging.

Feature maps here are channels-last (B, H, W, C): LayerNorm and Linear act on the last dim.

Windows: the map is cut into non-overlapping ws x ws windows and attention runs inside each,
so the cost is linear in H*W instead of quadratic. Every second block rolls the map by
ws // 2 first, so the new windows straddle the old borders and information crosses them.
After the roll, a window at the bottom/right edge holds pieces of the map that were not
neighbours (they wrapped around); the attention mask (-100 before the softmax) stops tokens
from different pieces ("regions") seeing each other.

Sizes that are not multiples of the window, or smaller than it, follow torchvision exactly:
the map is zero-padded on the bottom/right to a multiple of ws (the padded tokens are not
masked), and the shift is dropped along a side whose padded size is <= ws, since a single
window already covers it. (The paper's code instead shrinks the window to the map size.)
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .act import ActLayer
from .drop import DropPath
from .transformer import Mlp

MASK_VALUE = -100.0  # what the reference implementations add; exp(-100) ~ 4e-44, i.e. zero weight


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows in row-major order; H, W multiples of ws."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of window_partition: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table: the row/column offset of key j from query i."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]) + (ws - 1)  # offsets shifted to 0 .. 2ws-2, (2, N, N)
    return rel[0] * (2 * ws - 1) + rel[1]


def shifted_window_mask(H: int, W: int, ws: int, shift: Tuple[int, int], device=None) -> torch.Tensor:
    """Additive mask (nW, ws*ws, ws*ws) for a map of padded size (H, W) rolled by -shift:
    0 between tokens of the same region, MASK_VALUE between different ones.

    Along each side the rolled map has three regions: [0, H-ws), [H-ws, H-shift), [H-shift, H)
    (the last one is the part that wrapped around)."""
    def region(n: int, s: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - ws).long() + (i >= n - s).long()  # 0, 1, 2 (with s = 0 the last region is empty)

    ids = region(H, shift[0])[:, None] * 3 + region(W, shift[1])[None, :]  # (H, W) region id
    ids = window_partition(ids[None, :, :, None], ws).squeeze(-1)  # (nW, N)
    differ = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, MASK_VALUE)


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with a learned relative position bias.

    Each head has a table of (2ws-1)^2 biases, one per possible (dy, dx) offset between two
    tokens of a window, added to q k^T / sqrt(d) before the softmax.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.window_size, self.shift_size = window_size, shift_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:  # (heads, N, N)
        N = self.window_size ** 2
        return self.relative_position_bias_table[self.relative_position_index.flatten()].view(N, N, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        B, H, W, C = x.shape
        ws = self.window_size
        x = F.pad(x, (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))  # bottom/right zeros
        pH, pW = x.shape[1:3]
        shift = (self.shift_size if pH > ws else 0, self.shift_size if pW > ws else 0)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))

        windows = window_partition(x, ws)  # (B*nW, N, C)
        Bw, N, _ = windows.shape
        q, k, v = self.qkv(windows).reshape(Bw, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if any(shift):
            mask = shifted_window_mask(pH, pW, ws, shift, device=x.device)  # (nW, N, N)
            nW = mask.shape[0]
            attn = (attn.view(B, nW, self.num_heads, N, N) + mask[None, :, None]).view(Bw, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(-1))
        out = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
        out = self.proj_drop(self.proj(out))

        x = window_reverse(out, ws, pH, pW)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


class SwinBlock(nn.Module):
    """Pre-norm Swin block on (B, H, W, C): x + W-MSA(LN(x)) (shifted when shift_size > 0), x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: ActLayer = "gelu", norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shift_size, True, attn_drop, drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x down-sampling: concatenate each 2x2 neighbourhood (4C), LayerNorm, Linear(4C, 2C, no bias).

    Odd sides are zero-padded by one row/column first. (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # order (even row, even col), (odd, even), (even, odd), (odd, odd), as the reference weights expect
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
