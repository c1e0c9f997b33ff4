"""Interpretability (the guide, §7.4): CAM family, guided backprop, feature maps, filters,
activation maximisation, feature inversion, effective receptive fields, and measured scores
(pointing game, energy in mask, deletion / insertion) on the shapes world.

Every method uses only the model interface (`feature_info`, `forward_features`, `forward_head`,
`get_classifier`, `default_cfg`, and `tokens_to_map` for ViT-like models) and returns tensors;
`cnnkit.explain.plot` turns them into PNG figures.

    from cnnkit.explain import gradcam, evaluate_localization
    maps = gradcam(model, x)                        # (B, H, W), each peak 1
    evaluate_localization(model, n=64, method="cam")  # {"pointing_game": ..., ...}
"""
from ._core import resolve_layer, total_variation
from .cam import cam, gradcam, gradcam_pp, guided_backprop, guided_gradcam
from .erf import effective_receptive_field
from .features import activation_maximization, feature_maps, filters
from .inversion import inversion, invert_depths
from .scores import (HEATMAP_METHODS, blur, deletion_insertion, energy_in_mask, evaluate_localization,
                     pointing_game, pointing_hits)

__all__ = ["cam", "gradcam", "gradcam_pp", "guided_backprop", "guided_gradcam", "feature_maps", "filters",
           "activation_maximization", "inversion", "invert_depths", "effective_receptive_field",
           "pointing_game", "pointing_hits", "energy_in_mask", "deletion_insertion", "evaluate_localization",
           "blur", "resolve_layer", "total_variation", "HEATMAP_METHODS"]
