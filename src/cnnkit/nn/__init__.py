"""Building blocks shared by every architecture, and name -> layer tables.

Each block lives in its own small module (residual.py, mbconv.py, ...); this package re-exports them
so models and user code can write `from cnnkit.nn import Bottleneck, SqueezeExcite`. The block modules
import only from each other and from cnnkit.registry, never from cnnkit.models: no import cycles.
"""
from .act import ACTIVATIONS, create_act, get_act_layer
from .aspp import ASPP, ImagePool
from .conv import ConvNormAct, same_padding
from .dense import DenseBlock, DenseLayer, Transition
from .drop import DropPath, drop_path
from .ghost import GhostBottleneck, GhostModule
from .inception import Inception, NaiveInception, inception_conv_params
from .mbconv import InvertedResidual, MBConv, make_divisible
from .norm import GLOBAL_POOLS, NORMS, POOLS, create_global_pool, create_pool, get_norm_layer
from .patch import PatchEmbed, patch_grid
from .residual import BasicBlock, Bottleneck, make_downsample, make_res_stage
from .se import SqueezeExcite
from .separable import DepthwiseSeparableConv, separable_param_ratio
from .shuffle import ChannelShuffle, ShuffleV2Block, channel_shuffle
from .transformer import Attention, LayerNorm6, Mlp, TokenHead, TransformerBlock
from .transposed import ConvTransposeNormAct, exact_upsample_padding, transposed_output_size
from .window_attention import (PatchMerging, SwinBlock, WindowAttention, relative_position_index,
                               shifted_window_mask, window_partition, window_reverse)

__all__ = [
    # layer tables and the conv-norm-act unit
    "ACTIVATIONS", "create_act", "get_act_layer", "ConvNormAct", "same_padding",
    "NORMS", "POOLS", "GLOBAL_POOLS", "create_pool", "create_global_pool", "get_norm_layer",
    # classic CNN blocks
    "BasicBlock", "Bottleneck", "make_downsample", "make_res_stage",
    "Inception", "NaiveInception", "inception_conv_params",
    "DenseLayer", "DenseBlock", "Transition",
    "ConvTransposeNormAct", "transposed_output_size", "exact_upsample_padding",
    # dense prediction
    "ASPP", "ImagePool",
    # mobile blocks
    "DepthwiseSeparableConv", "separable_param_ratio", "SqueezeExcite",
    "InvertedResidual", "MBConv", "make_divisible", "DropPath", "drop_path",
    "GhostModule", "GhostBottleneck", "channel_shuffle", "ChannelShuffle", "ShuffleV2Block",
    # transformer blocks
    "PatchEmbed", "patch_grid", "Attention", "Mlp", "TransformerBlock", "TokenHead", "LayerNorm6",
    "WindowAttention", "SwinBlock", "PatchMerging", "window_partition", "window_reverse",
    "shifted_window_mask", "relative_position_index",
]
