"""The guide's mathematics (§2, §3) in plain NumPy, forward and backward, checked against PyTorch.

Read these files to see what a CNN layer computes; use `torch` to train one. Layouts follow
PyTorch: images are (N, C, H, W), conv weights (C_out, C_in/groups, KH, KW), linear weights
(out, in). Every backward takes the upstream gradient `dout` first and returns gradients
shaped like the inputs. Nothing is modified in place.

    formulas     conv_output_size, conv_transpose_output_size, conv_params, fc_params
    conv         im2col / col2im, conv2d (cross-correlation), conv2d_true (flipped kernel),
                 conv2d_backward, conv_transpose2d (+ backward)
    pool         max_pool2d, avg_pool2d (+ backward), global_avg_pool (+ backward)
    norm         batch_norm (train / eval, running statistics), batch_norm_backward
    activations  sigmoid, tanh, relu, leaky_relu, elu, gelu (+ backward), get_activation
    loss         softmax, log_softmax, cross_entropy (+ backward; label smoothing, soft targets)
    linear       linear (+ backward), dropout (+ backward)
"""
from .activations import (ACTIVATIONS, elu, elu_backward, gelu, gelu_backward, get_activation,
                          leaky_relu, leaky_relu_backward, relu, relu_backward, sigmoid,
                          sigmoid_backward, tanh, tanh_backward)
from .conv import (col2im, conv2d, conv2d_backward, conv2d_true, conv_transpose2d,
                   conv_transpose2d_backward, im2col)
from .formulas import conv_output_size, conv_params, conv_transpose_output_size, fc_params
from .linear import dropout, dropout_backward, linear, linear_backward
from .loss import cross_entropy, cross_entropy_backward, log_softmax, softmax
from .norm import batch_norm, batch_norm_backward
from .pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool, global_avg_pool_backward,
                   max_pool2d, max_pool2d_backward)

__all__ = [
    "conv_output_size", "conv_transpose_output_size", "conv_params", "fc_params",
    "im2col", "col2im", "conv2d", "conv2d_true", "conv2d_backward",
    "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "global_avg_pool", "global_avg_pool_backward",
    "batch_norm", "batch_norm_backward",
    "ACTIVATIONS", "get_activation", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
    "gelu", "gelu_backward",
    "softmax", "log_softmax", "cross_entropy", "cross_entropy_backward",
    "linear", "linear_backward", "dropout", "dropout_backward",
]
