"""Transposed convolution -> norm -> activation: learned upsampling for decoders and generators.

A transposed convolution is the adjoint (the gradient) of a convolution with the same weights: where
a stride-S conv maps an H x W map to about H/S x W/S, its transpose maps back to about H*S x W*S
(it is also called "deconvolution", although it does not invert the convolution). Output size:

    W_out = (W - 1)*S - 2P + D*(K - 1) + output_padding + 1      (= (W - 1)*S - 2P + K + output_padding for D = 1)

`output_padding` (< S) picks one of the S input sizes that a stride-S conv maps to the same size.
With `padding=None` the layer upsamples by exactly S: P and output_padding are chosen so that
2P - output_padding = D*(K - 1) + 1 - S (K=4 S=2 -> P=1; K=3 S=2 -> P=1, output_padding=1).
"""
from __future__ import annotations

from torch import nn

from .act import ActLayer, create_act
from .norm import NormLayer, get_norm_layer


def transposed_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                           output_padding: int = 0, dilation: int = 1) -> int:
    """(W - 1)*S - 2P + D*(K - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1


def exact_upsample_padding(kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(padding, output_padding) that make W_out = W * stride."""
    excess = dilation * (kernel_size - 1) + 1 - stride  # must equal 2P - output_padding
    if excess < 0:
        raise ValueError(f"kernel_size {kernel_size} is smaller than stride {stride}: an exact x{stride} upsampling "
                         "needs kernel_size >= stride")
    return (excess + 1) // 2, excess % 2


class ConvTransposeNormAct(nn.Sequential):
    """ConvTranspose2d (no bias when a norm follows) -> norm -> activation.

    (B, in_chs, H, W) -> (B, out_chs, H_out, W_out) with the size formula of the module docstring;
    the defaults (K=4, S=2, padding=None) double the size, the usual decoder step.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 4, stride: int = 2, padding: int | None = None,
                 output_padding: int | None = None, dilation: int = 1, groups: int = 1,
                 norm_layer: NormLayer = "batch", act_layer: ActLayer = "relu", bias: bool | None = None,
                 inplace: bool = True):
        if padding is None:
            padding, auto_op = exact_upsample_padding(kernel_size, stride, dilation)
            output_padding = auto_op if output_padding is None else output_padding
        output_padding = output_padding or 0
        if output_padding >= max(stride, dilation):
            raise ValueError(f"output_padding {output_padding} must be smaller than stride or dilation")
        has_norm = norm_layer is not None and norm_layer != "none"
        if bias is None:
            bias = not has_norm
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_chs, out_chs, kernel_size, stride, padding, output_padding,
                                       groups=groups, bias=bias, dilation=dilation)
        self.bn = get_norm_layer(norm_layer)(out_chs)
        self.act = create_act(act_layer, inplace=inplace)
        self.out_channels = out_chs

    def output_size(self, size: int) -> int:
        """Spatial output size for an input of `size` (the docstring's formula with this layer's numbers)."""
        c = self.conv
        return transposed_output_size(size, c.kernel_size[0], c.stride[0], c.padding[0], c.output_padding[0],
                                      c.dilation[0])
