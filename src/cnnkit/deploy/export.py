"""Export a trained checkpoint to ONNX or TorchScript, preprocessing included, and prove the file right.

What is exported is the model *with its input normalization inside*. The file takes one input,
`images`: float32 (N, C, H, W), values in [0, 1] — uint8 pixels divided by 255, resized to the
run's input size, in the channel order the run was trained on (RGB, or grey for C = 1). It
computes `(images - mean) / std` itself and returns `logits` (N, num_classes), before softmax
(or sigmoid for multi-label runs). A deployment needs only resize and /255; everything else
travels with the file as metadata (input size, mean/std, class names, model name, versions):
in the ONNX ModelProto's `metadata_props` (one key per field, each value a JSON string), in the
TorchScript archive's extra file `cnnkit.json`, and in a sidecar `<output>.json` beside either.

After writing, the file is loaded by the runtime that will serve it (onnxruntime on the CPU;
torch.jit.load) and run on random batches — of other sizes too when the batch axis is dynamic —
and, for runs on the built-in shapes data, on real validation images. The largest absolute
difference from the eager PyTorch model must be at most `tolerance` (1e-4), else the export
fails. The file is written under a temporary name and renamed only after that check passes, so
a failed export leaves nothing that looks like a good file (an older export at the same path
stays as it was).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..registry import CnnkitError, suggest
from ..utils import atomic_write_text, class_names
from ..engine.inference import load_checkpoint_model, task_from_meta
from ..engine.precision import resolve_device

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("auto", "legacy", "dynamo")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT, OUTPUT = "images", "logits"
EXTRA_FILE = "cnnkit.json"  # the TorchScript archive's metadata file
DEFAULT_OPSET = 17          # LayerNormalization is a single op from 17 on; every onnxruntime since 1.11 runs it
TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'cnnkit[onnx]'"


class NormalizedModel(nn.Module):
    """images in [0, 1] (B, C, H, W) -> logits (B, num_classes): the run's normalization, then the model.

    The arithmetic is `Preprocess.normalize`'s, `(x - mean) * (1 / std)`, so the exported file
    sees exactly the numbers `cnnkit predict` feeds the model.
    """

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) * self.inv_std)  # (B, num_classes)


@dataclass
class ExportResult:
    path: Path                  # the exported file
    sidecar: Path               # <path>.json: the metadata and the check
    format: str                 # onnx | torchscript
    metadata: dict              # what the file carries (see `export_metadata`)
    checks: list = field(default_factory=list)  # [{"input": ..., "batch": n, "max_abs_diff": d}]
    max_abs_diff: float = 0.0
    tolerance: float = TOLERANCE
    seconds: float = 0.0


def require_onnx():
    """(onnx, onnxruntime) modules, or one line saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise CnnkitError(f"ONNX export needs onnx and onnxruntime ({e}); install them: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def export_metadata(meta: dict, folder: Path, fmt: str, batch: int, dynamic: bool, spec=None) -> dict:
    """The checkpoint's meta.json reduced to what a deployment needs, plus how the file was made."""
    from .. import __version__

    c, h, w = (int(v) for v in meta["input_size"])
    multi = bool(meta.get("multi_label", False)) or meta.get("task") == "multilabel"
    outputs = list(spec.output_names) if spec is not None else [OUTPUT]
    if spec is not None and spec.notes:
        output = "; ".join(spec.notes)
    else:
        output = (f"logits (N, {meta['num_classes']}) before {'sigmoid' if multi else 'softmax'}"
                  if outputs == [OUTPUT] else ", ".join(outputs))
    return dict(
        format="cnnkit-export/1", export_format=fmt, model=meta["model"], model_args=meta.get("model_args", {}),
        task=meta.get("task", "classify"), num_classes=int(meta["num_classes"]),
        classes=class_names(meta), multi_label=multi, outputs=outputs,
        input_name=INPUT, input_size=[c, h, w], input_dtype="float32", input_layout="NCHW", input_range=[0.0, 1.0],
        mean=[float(v) for v in meta["mean"]], std=[float(v) for v in meta["std"]], normalized_inside=True,
        output_name=outputs[0], output=output,
        batch="dynamic" if dynamic else batch,
        cnnkit_version=__version__, torch_version=torch.__version__,
        source=str(folder), epoch=meta.get("epoch"), metrics=meta.get("metrics", {}),
    )


@contextlib.contextmanager
def _quiet():
    """Tracing warns about Python bools and deprecations and the exporters print progress: the
    numeric check after the export is what decides whether the file is right, so silence them."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _strict_fp32():
    """TF32 off on CUDA while checking: it changes fp32 results by ~1e-3, far above the tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _first_line(e: BaseException) -> str:
    """One line of an exception; for the torch.export-based exporter, its own summary line."""
    lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]  # no colours
    summary = [ln.split(">: ", 1)[-1] for ln in lines if ln.startswith("<class ")]  # "<class '...'>: what"
    text = (summary or lines or [""])[0].strip()
    return f"{type(e).__name__}: {text[:300]}"


# ONNX. Two exporters ship with torch: the TorchScript-based one (`dynamo=False`; the default up
# to torch 2.8, deprecated since 2.9, still present in 2.14) and the torch.export-based one
# (`dynamo=True`; the default since 2.9, needs onnxscript). We try the TorchScript-based one first
# because it is the robust path across our range: it exists with one signature in every torch
# >= 2.4, needs nothing beyond onnx, converted all 49 registered models on torch 2.14 (each as
# close to eager PyTorch as float32 allows), and was 2-10x faster; the torch.export-based one
# fails on LeNet-5 (its RBF output calls torch.cdist, which that exporter cannot translate).
# That one is the fallback when the first raises (a future torch without it), or the choice
# with `exporter="dynamo"`.

def _onnx_legacy(module: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, opset: int | None,
                 outputs: list[str]) -> None:
    kwargs = dict(input_names=[INPUT], output_names=list(outputs), opset_version=opset or DEFAULT_OPSET,
                  do_constant_folding=True)
    if dynamic:
        kwargs["dynamic_axes"] = {INPUT: {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5; 2.4 is TorchScript-only
        kwargs["dynamo"] = False
    torch.onnx.export(module, (example,), str(path), **kwargs)


def _onnx_dynamo(module: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, opset: int | None,
                 outputs: list[str]) -> None:
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in params:
        raise RuntimeError(f"torch {torch.__version__} has no torch.export-based ONNX exporter (torch >= 2.5 has)")
    kwargs = dict(input_names=[INPUT], output_names=list(outputs), dynamo=True, external_data=False, report=False,
                  verbose=False)
    if opset:
        kwargs["opset_version"] = opset
    if dynamic:  # a batch of 1 would be specialised to a constant: export_checkpoint traces with 2
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    torch.onnx.export(module, (example,), str(path), **{k: v for k, v in kwargs.items() if k in params})


def _write_onnx(module, example, path: Path, dynamic: bool, opset: int | None, exporter: str, meta: dict) -> dict:
    """Export, then write `meta` into the ModelProto; returns the fields the export added (exporter, opset)."""
    onnx, _ = require_onnx()
    errors = []
    for kind in (("legacy", "dynamo") if exporter == "auto" else (exporter,)):
        try:
            with _quiet():
                (_onnx_legacy if kind == "legacy" else _onnx_dynamo)(module, example, path, dynamic, opset,
                                                                     meta["outputs"])
            break
        except Exception as e:  # the exporters raise many types; each becomes one line of the report
            errors.append(f"{kind} exporter: {_first_line(e)}")
    else:
        raise CnnkitError(f"ONNX export of {meta['model']} failed ({'; '.join(errors)}); "
                          f"try --format torchscript")
    proto = onnx.load(str(path))
    used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    name = "torchscript-based (dynamo=False)" if kind == "legacy" else "torch.export-based (dynamo=True)"
    added = dict(exporter=name, opset=int(used))
    for key, value in {**meta, **added}.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    c, h, w = meta["input_size"]
    proto.doc_string = (f"cnnkit {meta['model']}: {INPUT} float32 (N, {c}, {h}, {w}) in [0, 1], normalized inside "
                        f"-> {meta['output']}; metadata_props hold classes, mean/std, versions")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return added


def _write_torchscript(module, example, path: Path, meta: dict) -> None:
    # Traced, not scripted: scripting needs TorchScript-compatible Python in every model (annotations,
    # no **kwargs), which the zoo does not promise; a trace records the eval-mode graph, and the
    # check below catches anything a trace gets wrong (a branch on data, a size taken as a constant).
    with _quiet():
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})


def load_runner(fmt: str, path: Path, device: torch.device, outputs: list[str] | None = None) -> Callable:
    """Load an exported file with its serving runtime: images (B, C, H, W) in [0, 1] -> its output on the CPU
    (one tensor, or a tuple when the file has several `outputs`)."""
    outputs = list(outputs or [OUTPUT])
    if fmt == "onnx":
        _, ort = require_onnx()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(x):
            got = tuple(torch.from_numpy(a) for a in session.run(outputs, {INPUT: x.cpu().numpy()}))
            return got if len(got) > 1 else got[0]

        return run_onnx
    with _quiet():
        module = torch.jit.load(str(path), map_location=device)

    def run(x):
        with torch.no_grad():
            out = module(x.to(device))
            return tuple(o.cpu() for o in out) if isinstance(out, (tuple, list)) else out.cpu()

    return run


def _tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _max_diff(got, ref) -> float:
    """The largest |difference| over every output; inf when shapes differ or a value is NaN."""
    diffs = []
    for g, r in zip(_tuple(got), _tuple(ref)):
        if g.shape != r.shape:
            return float("inf")
        d = (g.float() - r.float()).abs().max().item() if g.numel() else 0.0
        diffs.append(d if d == d else float("inf"))
    return max(diffs) if diffs else 0.0


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:  # a property some other tool wrote as plain text
        return value


def read_metadata(path: str | Path) -> dict:
    """The metadata an exported file carries (ONNX metadata_props or TorchScript's cnnkit.json)."""
    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"no exported model at {p}")
    if p.suffix == ".onnx":
        onnx, _ = require_onnx()
        try:
            props = onnx.load(str(p), load_external_data=False).metadata_props
        except Exception as e:  # protobuf's DecodeError and friends: the file is not an ONNX model
            raise CnnkitError(f"{p} is not a readable ONNX model ({_first_line(e)})") from None
        return {prop.key: _json_or_text(prop.value) for prop in props}
    extra = {EXTRA_FILE: ""}
    try:
        with _quiet():
            torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise CnnkitError(f"{p} is neither an .onnx file nor a TorchScript archive ({_first_line(e)})") from None
    if not extra[EXTRA_FILE]:
        raise CnnkitError(f"{p} is a TorchScript archive without cnnkit metadata ({EXTRA_FILE})")
    return json.loads(extra[EXTRA_FILE])


def _real_images(meta: dict, c: int, h: int, n: int = 16) -> torch.Tensor | None:
    """A few validation images in [0, 1] when they cost nothing to make (the built-in shapes data)."""
    d = meta.get("data") or {}
    if d.get("name") != "shapes":
        return None
    from ..data.datasets import load_data

    try:
        bundle = load_data("shapes", val="test", num_train=8, num_val=n, image_size=h, in_chans=c,
                           seed=int(d.get("seed") or 0))
    except CnnkitError:
        return None
    return None if bundle.val.images is None else bundle.val.images[:n].float() / 255.0


def _check_inputs(meta: dict, batch: int, dynamic: bool, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    c, h, w = (int(v) for v in meta["input_size"])
    g = torch.Generator().manual_seed(seed)
    sizes = [batch] + ([b for b in (1, batch + 1) if b != batch] if dynamic else [])
    inputs = [("random images", torch.rand(b, c, h, w, generator=g)) for b in sizes]
    real = _real_images(meta, c, h)
    if real is not None:
        if not dynamic:  # the file takes exactly `batch` images
            real = real[torch.arange(batch) % len(real)]
        inputs.append(("shapes validation images", real))
    return inputs


def _diagnose(module: nn.Module, x: torch.Tensor, ref: torch.Tensor, got: torch.Tensor) -> str:
    """After a failed check: rounding or a wrong graph? Both outputs against the model in float64.

    A deep network's float32 result moves by ~1e-4 with the order of its sums alone (ResNet-101
    at 32 px: eager PyTorch is 1.7e-4 from float64, onnxruntime 1.8e-4), so an export that is no
    further from float64 than PyTorch itself is rounding; one much further computes something else.
    """
    try:
        m64 = copy.deepcopy(module).to("cpu", torch.float64)
        with torch.no_grad():
            truth = m64(x.cpu().double())
    except Exception:  # best effort: a model that builds float32 tensors inside cannot run in float64
        return ""
    eager, export = (ref.double() - truth).abs().max().item(), (got.double() - truth).abs().max().item()
    if export <= 4 * eager:
        return (f" - float32 rounding, not a wrong graph: against float64 PyTorch is off by {eager:.2g} and the "
                f"export by {export:.2g} (logits up to {truth.abs().max().item():.3g}); to accept it, pass "
                f"--tolerance {2 * (ref - got).abs().max().item():.0e}")
    return (f" - against float64 the export is off by {export:.2g} where PyTorch is off by {eager:.2g}: "
            f"the exported graph computes something else")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def export_checkpoint(path: str | Path, format: str = "onnx", output: str | Path | None = None,
                      batch: int | None = None, dynamic: bool = True, opset: int | None = None,
                      device: str = "cpu", tolerance: float = TOLERANCE, exporter: str = "auto") -> ExportResult:
    """Export a run or checkpoint to `format` (onnx | torchscript), check it, write it and a sidecar JSON.

    The file takes `images` float32 (N, C, H, W) in [0, 1] and normalizes inside (module docstring).
    output: the file (default RUN/export/MODEL.onnx or MODEL.torchscript.pt; a folder: that name in it).
    batch: with `dynamic` (default) the batch axis is free and `batch` is only the traced example's size
      (default 2: tracing a batch of 1 invites size-1 dimensions to be taken as constants); with
      `dynamic=False` the file takes exactly `batch` images (default 1).
    opset: ONNX opset (default 17 with the TorchScript-based exporter, torch's own with the other).
    device: where the model is traced and the TorchScript file checked (cpu: the portable choice; a
      trace on cuda is for cuda). ONNX is always exported from, and checked on, the CPU.
    tolerance: the largest allowed |exported - eager| over all check inputs.
    exporter: ONNX only; auto (TorchScript-based, then torch.export-based), legacy, or dynamo.
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise suggest(str(format), FORMATS, "export format")
    if exporter not in EXPORTERS:
        raise suggest(str(exporter), EXPORTERS, "ONNX exporter")
    if batch is not None and batch < 1:
        raise CnnkitError(f"batch must be at least 1 (got {batch})")
    if not tolerance > 0:
        raise CnnkitError(f"tolerance must be positive (got {tolerance})")
    if opset is not None and (format != "onnx" or not 7 <= opset <= 30):
        raise CnnkitError(f"opset {opset} is not usable: --opset applies to ONNX only, between 7 and the newest "
                          f"your torch knows (default {DEFAULT_OPSET})")
    if format == "onnx":
        require_onnx()  # before any work: one line instead of a failure after a minute of tracing
    dev = torch.device("cpu") if format == "onnx" else resolve_device(device)

    model, meta, folder = load_checkpoint_model(path, dev)
    for key in ("input_size", "mean", "std"):
        if key not in meta:
            raise CnnkitError(f"{folder / 'meta.json'} lacks {key!r}; the export needs the run's preprocessing")
    batch = batch or (2 if dynamic else 1)
    spec = task_from_meta(meta, getattr(model, "default_cfg", None)).export_spec(model.float(), meta["mean"],
                                                                                meta["std"])
    module = spec.module.to(dev).eval()
    info = export_metadata(meta, folder, format, batch, dynamic, spec)

    filename = re.sub(r"[^\w.-]", "_", meta["model"]) + SUFFIX[format]  # tv:resnet18 -> tv_resnet18.onnx
    if output is None:
        run_dir = folder.parent if folder.name in ("best", "last") else folder
        out = run_dir / "export" / filename
    else:
        out = Path(output)
        if out.is_dir():
            out = out / filename
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out.with_name(out.name + ".json")
    tmp = out.with_name(f".{out.name}.partial{out.suffix}")

    try:
        with torch.no_grad(), _strict_fp32():
            # eager references first; the first random batch (of `batch` images) is also what is traced
            inputs = _check_inputs(meta, batch, dynamic)
            refs = [module(x.to(dev)) for _, x in inputs]
            single = info["outputs"] == [OUTPUT]
            expect = (spec.shape(batch, inputs[0][1]) if spec.shape is not None
                      else (batch, info["num_classes"]))  # the task's logits; classification's by default
            wrong = not isinstance(refs[0], torch.Tensor) or tuple(refs[0].shape) != tuple(expect)
            if single and wrong:
                shape = tuple(getattr(refs[0], "shape", ()))
                raise CnnkitError(f"{meta['model']} in eval mode returns {type(refs[0]).__name__} {shape}, "
                                  f"not logits {tuple(expect)}")
            refs = [tuple(o.float().cpu() for o in _tuple(r)) for r in refs]
            refs = [r[0] if len(r) == 1 else r for r in refs]
            example = inputs[0][1].to(dev)
            if format == "onnx":
                info.update(_write_onnx(module, example, tmp, dynamic, opset, exporter, info))
            else:
                info["exporter"] = "torch.jit.trace"
                _write_torchscript(module, example, tmp, info)
            runner = load_runner(format, tmp, dev, info["outputs"]) if not single else load_runner(format, tmp, dev)
            compare = spec.compare or _max_diff
            checks, outs = [], []
            for (label, x), ref in zip(inputs, refs):
                got = runner(x)
                got = tuple(g.float() for g in got) if isinstance(got, tuple) else got.float()
                shapes = [tuple(g.shape) for g in _tuple(got)], [tuple(r.shape) for r in _tuple(ref)]
                if shapes[0] != shapes[1] and spec.compare is None:
                    raise CnnkitError(f"the exported {format} model returns {shapes[0]} instead of "
                                      f"{shapes[1]} on {label} (batch {len(x)}); nothing was written to {out}")
                diff = compare(got, ref)
                checks.append(dict(input=label, batch=len(x), max_abs_diff=diff if diff == diff else float("inf")))
                outs.append(got)
            # all inputs first, then judge the worst: the suggested --tolerance then covers every input
            worst = max(range(len(checks)), key=lambda i: checks[i]["max_abs_diff"])
            diff = checks[worst]["max_abs_diff"]
            if not diff <= tolerance:
                label, x = inputs[worst]
                raise CnnkitError(f"the exported {format} model disagrees with PyTorch on {label} (batch {len(x)}): "
                                  f"max |difference| {diff:.3g} > {tolerance:g}"
                                  f"{_diagnose(module, x, refs[worst], outs[worst]) if single else ''}; "
                                  f"nothing was written to {out}")
        max_diff = max(ch["max_abs_diff"] for ch in checks)
        side = dict(info, check=dict(max_abs_diff=max_diff, tolerance=tolerance, inputs=checks,
                                     runtime="onnxruntime (CPU)" if format == "onnx" else f"torch.jit.load ({dev})"))
        _fsync(tmp)
        atomic_write_text(sidecar, json.dumps(side, indent=2))
        os.replace(tmp, out)  # last: the exported file appears only once checked
    finally:
        for p in (tmp, tmp.with_name(tmp.name + ".data")):
            p.unlink(missing_ok=True)
    return ExportResult(path=out, sidecar=sidecar, format=format, metadata=info, checks=checks, max_abs_diff=max_diff,
                        tolerance=tolerance, seconds=time.perf_counter() - t0)
