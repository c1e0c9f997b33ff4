"""Building blocks shared by every architecture, and name -> layer tables."""
from .act import ACTIVATIONS, create_act, get_act_layer
from .conv import ConvNormAct, same_padding
from .norm import GLOBAL_POOLS, NORMS, POOLS, create_global_pool, create_pool, get_norm_layer

__all__ = [
    "ACTIVATIONS", "create_act", "get_act_layer", "ConvNormAct", "same_padding",
    "NORMS", "POOLS", "GLOBAL_POOLS", "create_pool", "create_global_pool", "get_norm_layer",
]
