"""Export to ONNX and TorchScript: the file runs in its own runtime, agrees with eager PyTorch, carries
the run's preprocessing, and a failed check leaves nothing behind.

The oracle for "normalization inside" is cnnkit's own inference path: the checkpoint's model fed
`Preprocess(mean, std)` of uint8 images, compared with the exported file fed the same images / 255.
"""
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

import cnnkit.api as api
from cnnkit.cli import app
from cnnkit.data.loader import Preprocess
from cnnkit.deploy import export as ex
from cnnkit.engine.checkpoint import save_checkpoint
from cnnkit.models import create_model
from cnnkit.registry import CnnkitError


def _eager(run, images_u8: torch.Tensor) -> torch.Tensor:
    """Logits the way `cnnkit predict` computes them: uint8 -> Preprocess -> model."""
    model, meta = api.load_model(str(run))
    with torch.no_grad():
        return model(Preprocess(meta["mean"], meta["std"], "cpu")(images_u8))


def _uint8_batch(meta: dict, n: int, seed: int = 0) -> torch.Tensor:
    """n shapes images the run never saw (another seed), uint8 (n, C, H, W) at the run's size."""
    from cnnkit.data.datasets import load_data

    c, h, w = meta["input_size"]
    return load_data("shapes", num_train=8, num_val=n, image_size=h, in_chans=c, seed=100 + seed).val.images[:n]


def _checkpoint(root, name: str, side: int, data: str | None = None, **kwargs):
    """A checkpoint saved directly: random weights, BN statistics of one random batch (not the identity),
    classifier scaled so eval logits are O(1) (a 1e-4 tolerance then means something)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=3, **kwargs)
    with torch.no_grad():
        model.train()(torch.rand(8, 3, side, side) * 2)
        fc = model.get_classifier()
        scale = 3.0 / model.eval()(torch.rand(8, 3, side, side)).std()
        fc.weight.mul_(scale)
        fc.bias.mul_(scale)
    meta = dict(format="cnnkit-checkpoint/1", model=name, model_args=kwargs, task="classify", num_classes=4,
                in_chans=3, classes=["circle", "square", "triangle", "star"], input_size=[3, side, side],
                mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], epoch=1, metrics={"val_acc": 0.25},
                data=dict(name=data, seed=0) if data else {})
    save_checkpoint(root / "best", model.state_dict(), meta)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """fastnet at 28 px on the shapes data (the export checks it on real shapes validation images too)."""
    return _checkpoint(tmp_path_factory.mktemp("export") / "run", "fastnet", 28, data="shapes")


def test_onnx_export_runs_in_onnxruntime_with_its_metadata(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    res = api.export(str(run), format="onnx", output=str(out))
    assert res.path == out and out.is_file() and res.sidecar == tmp_path / "m.onnx.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]  # no partial files left
    # dynamic batch: checked at the traced batch and at others, and on real shapes validation images
    batches = {c["batch"] for c in res.checks}
    assert len(batches) >= 3 and any("validation" in c["input"] for c in res.checks)
    assert 0 <= res.max_abs_diff <= 1e-4 and res.max_abs_diff == max(c["max_abs_diff"] for c in res.checks)

    _, meta = api.load_model(str(run))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and outp.name == "logits" and inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == meta["input_size"]
    props = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    assert props["classes"] == meta["classes"] and props["model"] == meta["model"] == "fastnet"
    assert props["mean"] == pytest.approx(meta["mean"]) and props["std"] == pytest.approx(meta["std"])
    assert props["input_size"] == meta["input_size"] and props["batch"] == "dynamic" and props["opset"] == 17
    assert props["cnnkit_version"] and props["input_range"] == [0.0, 1.0]
    side = json.loads(res.sidecar.read_text())
    assert {k: v for k, v in side.items() if k != "check"} == props == ex.read_metadata(out)
    assert side["check"]["max_abs_diff"] == res.max_abs_diff

    # normalization inside: the file on uint8 / 255 == cnnkit's Preprocess + model, at a batch never traced
    u8 = _uint8_batch(meta, 7)
    got = torch.from_numpy(sess.run(["logits"], {"images": (u8.float() / 255).numpy()})[0])
    ref = _eager(run, u8)
    assert ref.abs().max() > 0.5  # O(1) logits (see _checkpoint): a 1e-4 agreement is a real one
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # torch >= 2.10 says so
def test_torchscript_export_round_trips_metadata(run):
    res = api.export(str(run), format="torchscript")
    assert res.path == run / "export" / "fastnet.torchscript.pt" and res.path.is_file()
    assert res.sidecar.is_file() and res.max_abs_diff <= 1e-4
    extra = {"cnnkit.json": ""}
    module = torch.jit.load(str(res.path), _extra_files=extra)
    carried = json.loads(extra["cnnkit.json"])
    _, meta = api.load_model(str(run))
    assert carried["classes"] == meta["classes"] and carried["input_size"] == meta["input_size"]
    assert carried["exporter"] == "torch.jit.trace" and carried == ex.read_metadata(res.path)
    u8 = _uint8_batch(meta, 5, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(module(u8.float() / 255), _eager(run, u8), atol=1e-4, rtol=0)


def test_static_batch_is_fixed_in_the_graph(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    res = api.export(str(run), output=str(tmp_path), batch=3, dynamic=False, opset=13)
    assert res.path == tmp_path / "fastnet.onnx" and {c["batch"] for c in res.checks} == {3}
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == 3
    assert res.metadata["batch"] == 3 and res.metadata["opset"] == 13


@pytest.mark.parametrize("name, side, kwargs, formats", [
    ("resnet18", 16, {"small_input": True}, ("onnx",)),
    ("mobilenet_v3_small", 32, {}, ("onnx",)),
])
def test_other_families_export_within_tolerance(tmp_path, name, side, kwargs, formats):
    """Nothing in export is per model: residual and inverted-residual/SE/hardswish nets work alike.
    (ONNX only: it is the format whose operators can fail to convert; a trace is a trace.)"""
    pytest.importorskip("onnxruntime")
    run = _checkpoint(tmp_path / name, name, side, **kwargs)
    for fmt in formats:
        res = api.export(str(run), format=fmt)
        assert res.path.is_file() and res.metadata["model"] == name and res.metadata["model_args"] == kwargs
        assert res.max_abs_diff <= 1e-4 and len(res.checks) == 3  # no data set in meta: random batches only


def test_a_check_that_fails_leaves_no_file(run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    real_runner = ex.load_runner

    def perturbed(fmt, path, device):  # the exported file, as if it computed slightly wrong logits
        run = real_runner(fmt, path, device)
        return lambda x: run(x) + 1e-3

    monkeypatch.setattr(ex, "load_runner", perturbed)
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(CnnkitError, match=r"disagrees with PyTorch .* > 0\.0001 - against float64 the export "
                                              r"is off by .* computes something else; nothing was written"):
            api.export(str(run), format=fmt, output=str(out))
        assert list(tmp_path.iterdir()) == []

    # an earlier good export at the same path stays exactly as it was
    monkeypatch.setattr(ex, "load_runner", real_runner)
    api.export(str(run), output=str(out))
    before = out.read_bytes(), (tmp_path / "m.onnx.json").read_bytes()
    monkeypatch.setattr(ex, "load_runner", perturbed)
    with pytest.raises(CnnkitError, match="disagrees"):
        api.export(str(run), output=str(out), batch=4)
    assert (out.read_bytes(), (tmp_path / "m.onnx.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


@pytest.mark.slow
def test_auto_falls_back_to_the_torch_export_based_exporter(run, tmp_path, monkeypatch):
    """What `auto` does on a torch without the TorchScript-based exporter (torch.export + onnxscript)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    def gone(*args, **kwargs):
        raise RuntimeError("the TorchScript-based exporter was removed")

    monkeypatch.setattr(ex, "_onnx_legacy", gone)
    res = api.export(str(run), output=str(tmp_path / "m.onnx"))
    assert res.metadata["exporter"] == "torch.export-based (dynamo=True)" and res.max_abs_diff <= 1e-4
    assert len({c["batch"] for c in res.checks}) >= 3  # the batch axis is dynamic with this exporter too
    monkeypatch.setattr(ex, "_onnx_dynamo", gone)
    with pytest.raises(CnnkitError, match=r"failed \(legacy exporter: RuntimeError: the .*; dynamo exporter: "
                                          r"RuntimeError: .*\); try --format torchscript"):
        api.export(str(run), output=str(tmp_path / "n.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


def test_rounding_above_the_tolerance_is_told_apart(run, tmp_path):
    """A tolerance below float32's own noise fails too, but the message says it is rounding and what to pass."""
    pytest.importorskip("onnxruntime")
    with pytest.raises(CnnkitError, match=r"float32 rounding, not a wrong graph: .* pass --tolerance \de-\d\d;"):
        api.export(str(run), output=str(tmp_path / "m.onnx"), tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_onnx_packages_is_one_line(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[onnx\]'") as e:
        api.export(str(tmp_path / "no-such-run"), format="onnx")  # checked before the path: fails fast
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="onx"), "Did you mean 'onnx'"),
    (dict(format="torchscript", opset=17), "applies to ONNX only"),
    (dict(exporter="dynamic"), "Did you mean 'dynamo'"),
    (dict(batch=0), "batch must be at least 1"),
    (dict(tolerance=0), "tolerance must be positive"),
])
def test_bad_options_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(CnnkitError, match=message):
        api.export(str(tmp_path), **kwargs)


def test_bad_run_path_is_a_clear_error(tmp_path):
    with pytest.raises(CnnkitError, match="no run or checkpoint"):
        api.export(str(tmp_path / "nope"), format="torchscript")
    with pytest.raises(CnnkitError, match="holds no checkpoint"):
        api.export(str(tmp_path), format="torchscript")
    (tmp_path / "bad.pt").write_bytes(b"not an archive")
    with pytest.raises(CnnkitError, match="neither an .onnx file nor a TorchScript archive"):
        ex.read_metadata(tmp_path / "bad.pt")
    with pytest.raises(CnnkitError, match="no exported model"):
        ex.read_metadata(tmp_path / "missing.onnx")


def test_cli_export(run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    r = runner.invoke(app, ["export", str(run), "--format", "onnx", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "max abs difference" in r.output and "ok" in r.output and "cli.onnx" in r.output
    assert "validation" in r.output and out.is_file() and (tmp_path / "cli.onnx.json").is_file()
    r = runner.invoke(app, ["export", str(run), "-f", "torchscript", "--static", "--batch", "2",
                            "-o", str(tmp_path / "cli.pt")])
    assert r.exit_code == 0, r.output
    assert ex.read_metadata(tmp_path / "cli.pt")["batch"] == 2
    r = runner.invoke(app, ["export", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "error:" in r.output and "no run or checkpoint" in r.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = runner.invoke(app, ["export", str(run)])
    assert r.exit_code == 1 and "pip install 'cnnkit[onnx]'" in r.output
    r = runner.invoke(app, ["export", "--help"])
    assert r.exit_code == 0 and "[0, 1]" in r.output
