"""Every registered model, driven by the registry: no hand-kept list of names anywhere.

For each: the builder takes num_classes and in_chans (a 1-channel input and 7 classes here),
the forward pass has the right shape and no NaN, every parameter receives a gradient, the
common interface holds (forward_features + forward_head == forward, reset_classifier,
feature_info and default_cfg name real modules).
"""
import inspect

import pytest
import torch

from cnnkit.models import MODELS, create_model, list_models

# the classification families; detectors have their own registry-driven tests (tests/models/test_detectors.py)
ALL = list_models(task="classify") + list_models(task="multilabel")


def _input_side(model) -> int:
    side = model.default_cfg["input_size"][-1]
    return min(side, 64)


def test_registry_is_populated_and_names_are_unique():
    assert len(ALL) >= 45 and len(set(ALL)) == len(ALL)
    assert list_models("resnet*") == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]


@pytest.mark.parametrize("name", ALL)
def test_builder_signature_and_description(name):
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    assert "num_classes" in params and "in_chans" in params
    assert (builder.__doc__ or "").strip(), f"{name}: `cnnkit models` shows the builder's docstring; add one"


@pytest.mark.parametrize("name", ALL)
def test_model_forward_backward_interface(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1)
    cfg = model.default_cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == 7 and cfg["input_size"][0] == 1
    assert len(cfg["mean"]) == len(cfg["std"]) == 1
    modules = dict(model.named_modules())
    for key in ("first_conv", "classifier"):
        assert cfg[key] in modules, f"default_cfg[{key!r}] = {cfg[key]!r} is not a module"
    for info in model.feature_info:
        assert info["module"] in modules and info["num_chs"] > 0
    side = _input_side(model)
    x = torch.randn(2, 1, side, side)
    model.train()
    out = model(x)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    assert logits.shape == (2, 7)
    loss = sum(o.float().square().mean() for o in (out if isinstance(out, (tuple, list)) else [out]))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 7) and torch.isfinite(y).all()
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), y, atol=1e-5)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.ndim == 2 and pre.shape[0] == 2
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.get_classifier() is not None


def _train_args(name: str) -> list[str]:
    """Tiny CLI arguments; ImageNet-sized models get their small-input stem for 32 px images."""
    with torch.device("meta"):
        side = create_model(name).default_cfg["input_size"][-1]
    args = ["train", "--model", name, "--data", "shapes", "--epochs", "1", "--image-size", "32", "--batch-size", "16",
            "--set", "num_train=32", "--set", "num_val=16", "--optimizer", "adam", "--lr", "1e-3", "-q"]
    if side > 32:
        args += ["--set", "model_args={small_input: true}"]
    return args


@pytest.mark.parametrize("name", ALL)
def test_every_model_trains_from_the_cli(name, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from cnnkit.cli import app

    r = CliRunner().invoke(app, _train_args(name) + ["--project", str(tmp_path), "--name", "r"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "best" / "weights.safetensors").is_file() and "done" in r.output
    # the report works for every model: each of its sections was built (a failed one says "not available")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "not written" not in r.output and "not available" not in page, r.output
    shutil.rmtree(tmp_path)  # the big ones write hundreds of MB
