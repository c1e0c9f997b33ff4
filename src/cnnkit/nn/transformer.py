"""Transformer pieces for vision models: MLP, multi-head self-attention, the pre-norm encoder
block and a class-token head (stochastic depth, `DropPath`, lives in drop.py).

All token tensors are (B, N, D): batch, sequence length (tokens), embedding width.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .act import ActLayer, get_act_layer
from .drop import DropPath, drop_path  # noqa: F401  (drop_path: also importable from here)

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)  # ViT's LayerNorm (eps 1e-6, as in the paper's JAX code)


class Mlp(nn.Module):
    """Linear(D, hidden) -> act -> dropout -> Linear(hidden, D) -> dropout, applied to every token."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: ActLayer = "gelu", drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(d)) V per head, heads concatenated and projected.

    One Linear makes Q, K and V together (rows ordered q, k, v, each split into `num_heads`
    heads of width d = D / num_heads). The product runs through
    F.scaled_dot_product_attention (fused kernels where available); `attention_map` computes
    the same weights explicitly, for inspection (attention rollout) and tests.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # q, k, v: (B, heads, N, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self._qkv(x)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, D)  # heads back side by side
        return self.proj_drop(self.proj(x))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights softmax(q k^T / sqrt(d)), (B, heads, N, N); rows sum to 1."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1)


class TransformerBlock(nn.Module):
    """Pre-norm encoder block: x + Attn(LN(x)), then x + MLP(LN(x)) (ViT, Dosovitskiy et al. 2021).

    Normalising before each sub-layer (not after, as the 2017 Transformer did) keeps the residual
    path an identity, which is what lets deep ViTs train without warm-up tricks.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: ActLayer = "gelu", norm_layer: Callable[[int], nn.Module] = LayerNorm6):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TokenHead(nn.Module):
    """Classifier on a token sequence: take the class token (index 0) or the mean of the other
    tokens, dropout, Linear. `pre_logits` stops before the Linear and returns (B, D)."""

    def __init__(self, in_features: int, num_classes: int, pool: str = "token", drop_rate: float = 0.0,
                 num_prefix_tokens: int = 1):
        super().__init__()
        if pool not in ("token", "avg"):
            raise ValueError(f"pool must be 'token' or 'avg', got {pool!r}")
        self.in_features, self.pool, self.num_prefix_tokens = in_features, pool, num_prefix_tokens
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # (B, N, D)
        x = x[:, 0] if self.pool == "token" else x[:, self.num_prefix_tokens:].mean(1)  # (B, D)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()
