"""Counting multiply-accumulates (MACs) at the ATen level.

One MAC is one multiply-add. Only the ops that carry them are counted: convolutions (grouped,
depthwise, dilated and transposed included), matrix products (Linear, matmul, bmm, einsum all
end in mm / addmm / bmm / baddbmm) and fused attention kernels. Elementwise work (activations,
normalisation, additions, pooling) is memory-bound and left out, the convention torchvision's
published "GFLOPS" (which are MACs) and `torch.utils.flop_counter` follow. FLOPs = 2 * MACs.

Why our own dispatch mode rather than `FlopCounterMode`: we need to attribute every count to
the graph node that runs it (one mode entered once, a `key` switched per node), and on CPU
`FlopCounterMode` misses the fused kernels `F.scaled_dot_product_attention` and
`nn.MultiheadAttention` take under `no_grad` (`_scaled_dot_product_flash_attention_for_cpu`,
`_native_multi_head_attention`); they are counted here.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _prod(xs) -> int:
    return math.prod(int(v) for v in xs)


def _conv(args, kwargs, out) -> int:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, w, transposed = args[0], args[1], bool(args[6])
    # each weight element meets one input value per output position (per input position when
    # transposed); w already holds C_in/groups (or C_out/groups), so groups need no extra care
    positions = x.shape[0] * _prod(x.shape[2:]) if transposed else out.shape[0] * _prod(out.shape[2:])
    return w.numel() * positions


def _mm(a, b) -> int:  # (m, k) @ (k, n)
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(a, b) -> int:  # (B, m, k) @ (B, k, n)
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _sdpa(args, kwargs, out) -> int:
    # q (..., L, E), k (..., S, E), v (..., S, Ev): Q K^T then P V
    q, k, v = args[0], args[1], args[2]
    L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    return _prod(q.shape[:-2]) * L * S * (E + Ev)


def _native_mha(args, kwargs, out) -> int:
    # _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, ...):
    # batch-first (B, L, E); in-projection, Q K^T, P V, out-projection
    q, k = args[0], args[1]
    E = int(args[3])
    B, L, S = (q.shape[0] if q.dim() == 3 else 1), q.shape[-2], k.shape[-2]
    return B * (L * E * E + 2 * S * E * E + 2 * L * S * E + L * E * E)


MAC_RULES: Dict[Any, Callable[[tuple, dict, Any], int]] = {
    aten.convolution: _conv,
    aten._convolution: _conv,
    aten.mm: lambda a, kw, o: _mm(a[0], a[1]),
    aten.addmm: lambda a, kw, o: _mm(a[1], a[2]),
    aten._addmm_activation: lambda a, kw, o: _mm(a[1], a[2]),
    aten.bmm: lambda a, kw, o: _bmm(a[0], a[1]),
    aten.baddbmm: lambda a, kw, o: _bmm(a[1], a[2]),
    aten.mv: lambda a, kw, o: a[0].numel(),
    aten.addmv: lambda a, kw, o: a[1].numel(),
    aten.dot: lambda a, kw, o: a[0].numel(),
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
              "_scaled_dot_product_fused_attention_overrideable"):
    if hasattr(aten, _name):  # the set of fused kernels differs between torch versions
        MAC_RULES[getattr(aten, _name)] = _sdpa
if hasattr(aten, "_native_multi_head_attention"):
    MAC_RULES[aten._native_multi_head_attention] = _native_mha


class MacCounter(TorchDispatchMode):
    """Counts MACs of every ATen op run inside it, under the current `key`.

    >>> with MacCounter() as mc:
    ...     mc.key = "conv1"; y = conv(x)
    >>> mc.counts["conv1"], mc.total
    """

    def __init__(self):
        super().__init__()
        self.key: Any = None
        self.counts: Dict[Any, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = MAC_RULES.get(getattr(func, "_overloadpacket", None))
        if rule is not None:
            self.counts[self.key] += int(rule(args, kwargs, out))
        return out


def count_macs(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Total MACs of one forward pass of `model` on `inputs` (no gradients are recorded)."""
    with torch.no_grad(), MacCounter() as mc:
        model(*inputs)
    return mc.total
