"""The guide's counting formulas (§2.2, §2.3) as functions.

Worked example of §2.2 (input 224x224x3, 64 kernels of 3x3):

    conv_params(3, 3, 64)          = (3*3*3 + 1) * 64        = 1,792
    fc_params(224 * 224 * 3, 64)   = (224*224*3 + 1) * 64    = 9,633,856

The fully connected comparison maps the flattened input (150,528 numbers) to 64 units, one per
kernel: the smallest dense layer with as many outputs as the conv layer has channels. It needs
5,376x the parameters. A dense layer that produced the conv layer's whole 64x224x224 output
would need fc_params(150_528, 3_211_264) ~ 4.8e11. The conv layer is cheap because each kernel
sees only a K x K x C_in patch (local connectivity) and is reused at every position (weight
sharing).
"""
from __future__ import annotations

from ..registry import CnnkitError
from ._common import IntPair, pair


def _positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise CnnkitError(f"{name} must be a positive integer, got {v}")


def conv_output_size(w: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """Output length along one axis: floor((W - K_eff + 2P) / S) + 1 with K_eff = D*(K-1) + 1.

    With D=1 this is the guide's floor((W - K + 2P) / S) + 1. K=3, S=1, P=1 keeps the size;
    K=3, S=2, P=1 halves it (rounding up). Pooling windows use the same formula.
    """
    _positive(k=k, s=s, d=d)
    if p < 0:
        raise CnnkitError(f"padding must be >= 0, got {p}")
    k_eff = d * (k - 1) + 1
    out = (w - k_eff + 2 * p) // s + 1
    if out < 1:
        raise CnnkitError(
            f"a {k}x{k} kernel (dilation {d}) does not fit an input of size {w} with padding {p}; "
            "use a smaller kernel or more padding")
    return out


def conv_transpose_output_size(w: int, k: int, s: int = 1, p: int = 0, d: int = 1,
                               output_padding: int = 0) -> int:
    """Output length of a transposed convolution: (W - 1)*S - 2P + D*(K-1) + output_padding + 1.

    It inverts `conv_output_size`: a conv with the same (K, S, P, D) maps this size back to W
    (for output_padding < S). A strided conv maps several sizes to the same W; `output_padding`
    (which must be < S or < D) picks which one to produce.
    """
    _positive(w=w, k=k, s=s, d=d)
    if not 0 <= output_padding < max(s, d):
        raise CnnkitError(f"output_padding must be in [0, max(stride, dilation)), got {output_padding}")
    out = (w - 1) * s - 2 * p + d * (k - 1) + output_padding + 1
    if out < 1:
        raise CnnkitError(f"padding {p} is too large: the transposed conv output would be {out}")
    return out


def conv_params(k: IntPair, c_in: int, c_out: int, groups: int = 1, bias: bool = True) -> int:
    """Parameters of a conv layer: (K*K*C_in/groups + 1) * C_out (drop the +1 without bias).

    Each of the C_out kernels has K*K weights per input channel it sees (C_in/groups of them)
    plus one bias. groups=C_in is the depthwise conv: K*K (+1) parameters per channel.
    """
    kh, kw = pair(k, "kernel size")
    _positive(kh=kh, kw=kw, c_in=c_in, c_out=c_out, groups=groups)
    if c_in % groups or c_out % groups:
        raise CnnkitError(f"groups={groups} must divide both c_in={c_in} and c_out={c_out}")
    return (kh * kw * (c_in // groups) + int(bias)) * c_out


def fc_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a fully connected layer: (in_features + 1) * out_features."""
    _positive(in_features=in_features, out_features=out_features)
    return (in_features + int(bias)) * out_features
