"""Interpretability (the guide, §7.4): CAM family, guided backprop, feature maps, filters,
activation maximisation, feature inversion, effective receptive fields, and measured scores
(pointing game, energy in mask, deletion / insertion) on the shapes world.

Every method uses only the model interface (`feature_info`, `forward_features`, `forward_head`,
`get_classifier`, `default_cfg`, and `tokens_to_map` for ViT-like models) and returns tensors;
`cnnkit.explain.plot` turns them into PNG figures and `cnnkit.explain.figures.draw` does both
for `cnnkit explain`.

    from cnnkit.explain import gradcam, evaluate_methods
    maps = gradcam(model, x)                                   # (B, H, W), each peak 1
    evaluate_methods(model, ["cam", "gradcam"], n=64)          # {"methods": {"cam": {...}, ...}, ...}
"""
from ._core import resolve_layer, total_variation
from .cam import cam, gradcam, gradcam_pp, guided_backprop, guided_gradcam, layercam
from .erf import effective_receptive_field, erf_extent
from .features import activation_maximization, feature_maps, filters
from .inversion import inversion, invert_depths
from .scores import (DEFAULT_METHODS, HEATMAP_METHODS, blur, deletion_insertion, energy_in_mask, evaluate_localization,
                     evaluate_methods, object_region, pointing_chance, pointing_game, pointing_hits,
                     shapes_localization_set)

__all__ = ["cam", "gradcam", "gradcam_pp", "layercam", "guided_backprop", "guided_gradcam", "feature_maps",
           "filters", "activation_maximization", "inversion", "invert_depths", "effective_receptive_field",
           "erf_extent", "pointing_game", "pointing_hits", "pointing_chance", "energy_in_mask", "object_region",
           "deletion_insertion", "evaluate_localization", "evaluate_methods", "shapes_localization_set", "blur",
           "resolve_layer", "total_variation", "HEATMAP_METHODS", "DEFAULT_METHODS"]
