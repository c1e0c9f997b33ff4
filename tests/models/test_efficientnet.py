"""EfficientNet B0-B7: torchvision parity (published coefficients) and the guide's compound-scaling rule."""
import math

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.efficientnet import (ALPHA, BETA, GAMMA, PUBLISHED, efficientnet, efficientnet_scaling,
                                        format_scaling_table, scaling_table)
from cnnkit.nn.drop import DropPath
from cnnkit.registry import CnnkitError

from models._zoo_helpers import assert_same_logits, calibrate, n_params


def bn_settings(m: nn.Module) -> list:
    return [(b.eps, b.momentum) for b in m.modules() if isinstance(b, nn.BatchNorm2d)]


@pytest.mark.parametrize("phi", range(8))
def test_published_variants_equal_torchvision(phi):
    name = f"efficientnet_b{phi}"
    with torch.device("meta"):
        ours, tv = create_model(name, num_classes=1000), getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(tv)
    load_torchvision_weights(ours, tv.state_dict())  # every key and shape maps (meta: nothing is copied)
    # torchvision: eps 1e-5 / momentum 0.1 for B0-B4, 1e-3 / 0.01 for B5-B7 (eval outputs depend on eps)
    assert bn_settings(ours) == bn_settings(tv)
    assert bn_settings(ours)[0] == ((1e-3, 0.01) if phi >= 5 else (1e-5, 0.1))
    # stochastic depth: the same probability on every block
    sd_tv = [m.p for m in tv.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    blocks = [b for stage in ours.stages for b in stage]
    assert len(sd_tv) == len(blocks)
    for b, p in zip(blocks, sd_tv):
        if b.has_skip:  # torchvision applies it only on residual blocks too
            assert (b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0) == pytest.approx(p)
    w, d, r, drop = PUBLISHED[phi]
    cfg = ours.default_cfg
    assert cfg["input_size"] == (3, r, r) and cfg["scaling"]["width"] == w and cfg["scaling"]["depth"] == d
    assert ours.head.drop.p == tv.classifier[0].p == drop
    assert cfg["scaling"]["guide"] == efficientnet_scaling(phi)


def test_b0_parameter_count():
    with torch.device("meta"):
        assert n_params(create_model("efficientnet_b0", num_classes=1000)) == 5_288_548


def test_b0_torchvision_weights_give_same_outputs():
    torch.manual_seed(0)
    tv = calibrate(torchvision.models.efficientnet_b0())
    ours = load_torchvision_weights(create_model("efficientnet_b0", num_classes=1000), tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    assert_same_logits(ours, tv, x, tv.features)
    # in train mode, stochastic depth drops residual branches per sample: outputs vary between calls
    ours.train()
    torch.manual_seed(0)
    a = ours.forward_features(x)
    b = ours.forward_features(x)
    assert not torch.allclose(a, b)


def test_compound_scaling_rule():
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(1.92, abs=0.01)  # ~ 2: FLOPs double per unit of phi
    s = efficientnet_scaling(3)
    assert s["depth"] == pytest.approx(1.2**3) and s["width"] == pytest.approx(1.1**3)
    assert s["resolution"] == round(224 * 1.15**3) == 341 and s["flops"] == pytest.approx(1.92**3, rel=1e-3)
    assert efficientnet_scaling(0) == dict(phi=0, depth=1.0, width=1.0, resolution=224, flops=1.0)


def test_compound_rule_models_and_comparison_table(capsys):
    rows = scaling_table()
    with capsys.disabled():  # shown with `pytest -s`: the guide's rule next to the published coefficients
        print("\n" + format_scaling_table(rows))
    assert [r["phi"] for r in rows] == list(range(8))
    import cnnkit.models.efficientnet as eff

    table = "\n".join("    " + line for line in format_scaling_table(rows).splitlines())
    assert table in eff.__doc__  # the table in the module docstring is the computed one
    assert rows[0]["params_compound"] == rows[0]["params_published"] == 5_288_548
    assert [r["guide_resolution"] for r in rows] == [224, 258, 296, 341, 392, 451, 518, 596]
    assert [r["resolution"] for r in rows] == [224, 240, 260, 300, 380, 456, 528, 600]
    for r in rows[1:]:
        assert r["depth"] < r["guide_depth"]  # published nets are shallower than alpha^phi
        assert r["params_compound"] > r["params_published"]
    # after rounding, the guide's phi = 1 and 2 networks are the published B2 and B3 networks
    assert rows[1]["params_compound"] == rows[2]["params_published"]
    assert rows[2]["params_compound"] == rows[3]["params_published"]
    # a compound-rule model really uses ceil(n * 1.2^phi) blocks per stage and 224 * 1.15^phi pixels
    with torch.device("meta"):
        m = create_model("efficientnet_b4", num_classes=1000, scaling="compound")
    assert [len(s) for s in m.stages] == [math.ceil(n * 1.2**4) for n in (1, 2, 2, 3, 3, 4, 1)]
    assert m.default_cfg["input_size"] == (3, 392, 392) and m.default_cfg["scaling"]["rule"] == "compound"
    assert m.default_cfg["tv_name"] is None
    with torch.device("meta"):
        half = efficientnet(1.5, "compound", num_classes=10)  # phi need not be an integer
    assert half.default_cfg["input_size"][1] == round(224 * 1.15**1.5)


def test_small_input_and_errors():
    m = create_model("efficientnet_b0", num_classes=10, in_chans=1, small_input=True).eval()
    assert m.stem.conv.stride == (1, 1) and m.feature_info[-1]["reduction"] == 16
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert m.default_cfg["input_size"] == (1, 32, 32) and len(m.default_cfg["mean"]) == 1
    with pytest.raises(CnnkitError, match="scaling"):
        create_model("efficientnet_b0", scaling="guide-ish")
    with torch.device("meta"):  # "guide" is another name for the guide's compound rule
        assert n_params(create_model("efficientnet_b1", 1000, scaling="guide")) == n_params(efficientnet(1, "compound"))
    with pytest.raises(CnnkitError, match="compound"):
        efficientnet(2.5, "published")
    with pytest.raises(CnnkitError):
        create_model("efficientnet_b1", no_such_option=True)
