"""The analytic receptive field agrees with the measured one, for every registered model.

For each model the deepest stage of `feature_info` whose receptive field is measurable at a
64 px input (not global, and small enough that the central position's region is not clipped by
the border) is probed: the extent of the non-zero input gradient of its central output position
must equal the analytic size. Registry-driven: a new model is covered without editing this file.
"""
import pytest
import torch

from cnnkit.analysis import empirical_receptive_field, receptive_field
from cnnkit.models import create_model, list_models


def _stage_rf(rf: dict, module: str):
    """RF of a module's output: its own row, or the last row executed inside it."""
    rows = [k for k in rf if k == module or k.startswith(module + ".")]
    return rf[rows[-1]] if rows else None


@pytest.mark.parametrize("name", list_models(task="classify") + list_models(task="multilabel"))
def test_analytic_rf_matches_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1).eval()
    side = min(64, model.default_cfg["input_size"][-1])
    size = (1, side, side)
    rf = receptive_field(model, size)
    for info in reversed(model.feature_info):
        got = _stage_rf(rf, info["module"])
        if got is None:
            continue
        r, jump, _ = got
        if not isinstance(r, int) or jump is None or not isinstance(jump, int) or r + 2 * jump >= side:
            continue
        measured = empirical_receptive_field(model, size, layer=info["module"])
        assert measured == r, f"{name} {info['module']}: analytic {r}, measured {measured}"
        return
    pytest.skip(f"{name}: no stage with a measurable receptive field at {side} px")
