"""Conv -> Norm -> Activation, the unit nearly every CNN is made of."""
from __future__ import annotations

from torch import nn

from .act import ActLayer, create_act
from .norm import NormLayer, get_norm_layer


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (and halves it at stride 2): (k - 1) // 2 * d."""
    return (kernel_size - 1) // 2 * dilation


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias when a norm follows) -> norm -> activation.

    Output size: floor((W - d*(K-1) - 1 + 2P) / S) + 1; with the default padding, K=3 S=1
    keeps the size and K=3 S=2 halves it. `dilation` > 1 gives the atrous convolution and
    `groups` the grouped / depthwise one.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        bias: bool | None = None,
        inplace: bool = True,
    ):
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        has_norm = norm_layer is not None and norm_layer != "none"
        if bias is None:
            bias = not has_norm
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups, bias=bias)
        self.bn = get_norm_layer(norm_layer)(out_chs)
        self.act = create_act(act_layer, inplace=inplace)
        self.out_channels = out_chs
