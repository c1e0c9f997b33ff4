"""The `cnnkit` command line: thin Typer commands, each calling one function of the Python API."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from .registry import CnnkitError

app = typer.Typer(
    help="cnnkit: build, inspect, train, evaluate and explain the networks of a complete CNN guide.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def handle_errors(fn):
    """User errors become one red line on stderr and exit code 1; Ctrl-C says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CnnkitError as e:  # escaped: messages hold brackets such as "cnnkit[onnx]"
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: the last completed epoch is saved; continue with "
                              "`cnnkit train --resume RUN`")
            raise typer.Exit(130)

    return wrapper


def _opt(help: str, *names: str):
    return typer.Option(None, *names, help=help, show_default=False)


@app.command()
@handle_errors
def train(
    data: Optional[str] = _opt("Data set: shapes (built in: classes, objects or class maps, as the task needs), fashion-mnist, mnist, cifar10, cifar100, imagefolder; coco, yolo, voc, segfolder (your files). See `cnnkit datasets`.", "--data", "-d"),
    model: Optional[str] = _opt("Model name (see `cnnkit models`), or tv:NAME / timm:NAME.", "--model", "-m"),
    task: Optional[str] = _opt("classify | multilabel | detect | segment | volume (default: the model's own). Its options: --set task_args='{loss: ce_dice}'.", "--task"),
    plan: Optional[Path] = _opt("Train nnU-Net's configuration from a plan written by `cnnkit plan DATA` (model, data, patches, batch, augmentation); other options go over it.", "--plan"),
    weights: Optional[str] = _opt("Start from pretrained weights: a torchvision .pth file or cnnkit .safetensors.", "--weights"),
    epochs: Optional[int] = _opt("Number of epochs.", "--epochs", "-e"),
    batch_size: Optional[int] = _opt("Batch size.", "--batch-size", "-b"),
    lr: Optional[float] = _opt("Peak learning rate.", "--lr"),
    optimizer: Optional[str] = _opt("sgd | momentum | nesterov | adam | adamw | rmsprop.", "--optimizer"),
    schedule: Optional[str] = _opt("none | step | cosine | onecycle | poly (nnU-Net's).", "--schedule"),
    weight_decay: Optional[float] = _opt("L2 weight decay (not on norms and biases).", "--weight-decay", "--wd"),
    label_smoothing: Optional[float] = _opt("Label smoothing in [0, 1).", "--label-smoothing"),
    augment: Optional[str] = _opt("none | light | standard | strong, or e.g. 'crop=4,hflip=0.5,cutmix=1'; detection and segmentation: 'hflip=0.5,scale=0.25,translate=0.1,color=0.2'.", "--augment"),
    ema: Optional[float] = _opt("EMA decay of the weights, e.g. 0.999 (0 = off).", "--ema"),
    early_stop: Optional[int] = _opt("Stop after N epochs without improvement of --monitor.", "--early-stop"),
    data_dir: Optional[str] = _opt("Folder to look in first for data files (or the image folder).", "--data-dir"),
    download: Optional[bool] = typer.Option(None, "--download", help="Allow downloading a missing data set.", show_default=False),
    val: Optional[str] = _opt("'test' (official split) or a held-out fraction of train such as 0.1.", "--val"),
    image_size: Optional[int] = _opt("Resize images to this size at load.", "--image-size"),
    device: Optional[str] = _opt("auto | cpu | cuda | cuda:N.", "--device"),
    amp: Optional[str] = _opt("Mixed precision: auto | off | bf16 | fp16.", "--amp"),
    compile: Optional[bool] = typer.Option(None, "--compile", help="torch.compile the model.", show_default=False),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn", help="Under torchrun: BatchNorm statistics over the global batch.", show_default=False),
    logger: Optional[str] = _opt("csv (metrics.csv only) | tensorboard (also RUN/tensorboard/).", "--logger"),
    seed: Optional[int] = _opt("Random seed.", "--seed"),
    name: Optional[str] = _opt("Run name (folder under --project).", "--name"),
    project: Optional[str] = _opt("Parent folder of runs (default runs).", "--project"),
    recipe: Optional[str] = _opt("Named recipe: default, or seed (the guide's §9 project, exactly).", "--recipe"),
    config: Optional[Path] = _opt("YAML file of config keys.", "--config", "-c"),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Any config key: --set model_args='{drop_rate: 0.2}'.", show_default=False),
    resume: Optional[Path] = _opt("Continue a stopped run exactly (its last/ checkpoint).", "--resume"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="One log line per epoch instead of a progress bar."),
):
    """Train a model. With no options: the default model on the built-in shapes data, in about a minute on a CPU."""
    from .api import train as train_api

    opts = {k: v for k, v in dict(
        data=data, model=model, task=task, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay, label_smoothing=label_smoothing, augment=augment, ema=ema, early_stop=early_stop,
        data_dir=data_dir, download=download, val=val, image_size=image_size, device=device, amp=amp,
        compile=compile, sync_bn=sync_bn, logger=logger, seed=seed, name=name, project=project, recipe=recipe).items() if v is not None}
    if quiet:
        opts["quiet"] = True
    from .config import parse_sets

    opts.update(parse_sets(set_))
    if plan is not None:
        opts["plan"] = str(plan)
    res = train_api(config=str(config) if config else None, resume=str(resume) if resume else None,
                    log=console.print, **opts)
    from .engine.distributed import is_main

    if not is_main():  # under torchrun the other processes have nothing to add
        return
    from .tasks import format_value

    metric = format_value(res.monitor_format, res.best_metric)
    console.print(f"\n[bold green]done[/]: best {res.monitor} {metric} at epoch {res.best_epoch}; "
                  f"run saved in [bold]{res.run_dir}[/]")
    console.print("next:\n"
                  f"  cnnkit eval {res.run_dir}\n"
                  f"  cnnkit predict {res.run_dir} IMAGE.png\n"
                  f"  open {res.run_dir / 'report.html'}    (or `cnnkit report RUN` to write it again)\n"
                  f"  cnnkit explain {res.run_dir} IMAGE.png --method gradcam\n"
                  f"  cnnkit export {res.run_dir} --format onnx\n"
                  "  cnnkit train --data fashion-mnist    (a real data set; Debian: apt-get install dataset-fashion-mnist)")


@app.command("eval")
@handle_errors
def eval_(
    run: Path = typer.Argument(..., help="A run folder or a checkpoint folder (best/, last/)."),
    data: Optional[str] = _opt("Evaluate on another data set with the same classes.", "--data"),
    data_dir: Optional[str] = _opt("Where to find that data.", "--data-dir"),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", show_default=False,
                                       help="Average with the mirrored image (default: as the run did)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
):
    """Evaluate a trained run on its validation split: loss, accuracy, per-class accuracy."""
    from .api import evaluate

    res = evaluate(str(run), data=data, data_dir=data_dir, tta=tta, device=device)
    console.print(f"{res['checkpoint']} on {res['data']} ({res['split']}, {res['images']:,} images"
                  f"{', with test-time flip' if res['tta'] else ''})")
    _print_summary(res["summary"])


def _print_summary(summary: dict) -> None:
    """A task's `eval_summary`: plain lines, then tables of (title, headers, rows)."""
    for line in summary.get("lines", []):
        console.print(line)
    for title, headers, rows in summary.get("tables", []):
        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*map(str, row))
        console.print(table)


@app.command()
@handle_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="A run folder or checkpoint folder."),
    images: List[Path] = typer.Argument(..., help="Image files (any format PIL reads)."),
    topk: int = typer.Option(3, "--topk", "-k", help="Classification: how many classes to show per image."),
    conf: float = typer.Option(0.25, "--conf", help="Detection: the lowest score drawn and listed."),
    out: Optional[Path] = _opt("Detection: folder for the drawn PNGs and predictions.json (default RUN/predict/).",
                               "--out", "-o"),
    device: str = typer.Option("auto", "--device"),
):
    """Predict with a trained model. Classification: top-k classes and probabilities. Detection: the boxes
    (and masks), drawn into one PNG per image, and all detections as COCO results JSON."""
    from .api import predict as predict_api

    results = predict_api(str(checkpoint), [str(p) for p in images], topk=topk, device=device, conf=conf,
                          out=str(out) if out else None)
    for r in results:
        lines = r.pop("lines")
        console.print(f"{r['image']}: {lines[0] if lines else ''}")
        for line in lines[1:]:
            console.print(f"  {line}")
    drawn = [r["drawn"] for r in results if "drawn" in r]
    if drawn:
        console.print(f"drawn: {Path(drawn[0]).parent}/ ({len(drawn)} PNG)")


@app.command()
@handle_errors
def models(pattern: str = typer.Argument("*", help="Shell-style pattern, e.g. 'resnet*'.")):
    """List the registered models."""
    from .models import MODELS, list_models

    names = list_models(pattern)
    if not names:
        raise CnnkitError(f"no model matches {pattern!r}")
    table = Table(Column("model", no_wrap=True), "description", title=f"{len(names)} models")
    for n in names:
        doc = (MODELS.get(n).__doc__ or "").strip().splitlines()
        table.add_row(n, doc[0] if doc else "")
    console.print(table)


@app.command()
@handle_errors
def datasets():
    """List the data sets cnnkit reads: native size, classes, and how to get the files."""
    from .data.datasets import dataset_info, list_datasets

    table = Table("description", "how to get it")
    for col, name in enumerate(("data set", "images", "classes", "train / test")):
        table.columns.insert(col, Column(name, no_wrap=True))
    for n in list_datasets():
        i = dataset_info(n)
        shape = f"{i['in_chans'] or '?'}x{i['image_size'] or '?'}x{i['image_size'] or '?'}"
        counts = f"{i['train']:,} / {i['test']:,}" if i["train"] and i["test"] else "from the files"
        table.add_row(n, shape, str(i["num_classes"] or "from the files"), counts, i["description"],
                      i["how_to_get"] or "built in")
    console.print(table)


@app.command("explain")
@handle_errors
def explain_(
    checkpoint: Path = typer.Argument(..., help="A run folder or checkpoint folder."),
    images: Optional[List[Path]] = typer.Argument(None, help="Image files to explain (not needed for filters, "
                                                             "actmax, erf and --evaluate)."),
    method: str = typer.Option("gradcam", "--method", "-m",
                               help="cam | gradcam | gradcam_pp (gradcam++) | layercam | guided_backprop | "
                                    "guided_gradcam | featuremaps | filters | inversion | erf | actmax."),
    layer: Optional[str] = _opt("Layer to look at (default: the last convolutional stage).", "--layer"),
    target: Optional[str] = _opt("Class name or index to explain (default: the predicted class).", "--target"),
    out: Optional[Path] = _opt("Where to write the PNG (default: RUN/explain/METHOD.png).", "--out", "-o"),
    steps: Optional[int] = _opt("Optimisation steps of inversion (200) and actmax (128).", "--steps"),
    evaluate: bool = typer.Option(False, "--evaluate", help="Score heat-map methods on shapes scenes with known "
                                                            "object masks (runs trained on shapes) instead of drawing."),
    num: int = typer.Option(64, "--num", "-n", min=1, help="--evaluate: number of scenes."),
    methods: str = typer.Option("cam,gradcam,gradcam_pp,guided_gradcam", "--methods",
                                help="--evaluate: comma-separated heat-map methods."),
):
    """Show what a trained model looks at (CAM family, gradients, feature maps, filters, inversion,
    receptive fields, activation maximisation), or score the heat maps with --evaluate."""
    if evaluate:
        from .api import evaluate_explanations

        if images:
            raise CnnkitError("--evaluate scores generated shapes scenes whose object masks are known; "
                              "drop the IMAGE arguments")
        names = [m for m in methods.split(",") if m.strip()]
        with console.status(f"scoring {len(names)} methods on {num} shapes scenes"):
            res = evaluate_explanations(str(checkpoint), methods=names, num=num, layer=layer)
        table = Table(Column("method", no_wrap=True), "map", "pointing game (chance)", "energy in mask (uniform)",
                      "deletion AUC ↓ (random)", "insertion AUC ↑ (random)",
                      title=f"explanations of {res['checkpoint']}",
                      caption=f"{res['n']} single-object shapes scenes, {res['channels']}x{res['size']}x{res['size']}; "
                              f"model accuracy on them {res['accuracy']:.1%}; object = mask + {res['outline']} px "
                              f"outline ({res['mask_fraction']:.1%} of the image); coarse maps scored on their own grid")

        def pair(r, key, base):
            return "-" if key not in r else f"{r[key]:.3f} ({r[base]:.3f})"

        notes = []
        for name, r in list(res["methods"].items()) + [("centre prior", res["baseline"])]:
            if "error" in r:
                table.add_row(name, "[red]n/a[/]", "-", "-", "-", "-")
                notes.append(f"{name}: {r['error']}")
                continue
            if "note" in r:
                notes.append(f"{name}: {r['note']}")
            table.add_row(name, r["map"], pair(r, "pointing_game", "pointing_chance"),
                          pair(r, "energy_in_mask", "energy_uniform"), pair(r, "deletion_auc", "random_deletion_auc"),
                          pair(r, "insertion_auc", "random_insertion_auc"))
        console.print(table)
        for line in notes:
            console.print(f"[dim]note[/] {line}", soft_wrap=True)
        return
    from .api import explain as explain_api

    path = explain_api(str(checkpoint), [str(p) for p in images or []], method=method, layer=layer, target=target,
                       out=str(out) if out else None, steps=steps)
    console.print(f"wrote {path}")


@app.command("report")
@handle_errors
def report_(
    run: Path = typer.Argument(..., help="A run folder (the one `cnnkit train` created)."),
    device: str = typer.Option("cpu", "--device", help="Where the one evaluation runs: cpu | auto | cuda."),
    max_images: int = typer.Option(16, "--max-images", min=0, help="Most pictures per gallery (mistakes, Grad-CAM)."),
):
    """Write RUN/report.html: one self-contained page (no internet needed) with the config, model summary,
    training curves, confusion matrix, per-class precision/recall/F1, the most confident mistakes and
    Grad-CAM samples. `cnnkit train` writes it at the end of every run unless --set report=false."""
    from .api import report as report_api

    path = report_api(str(run), device=device, max_images=max_images, log=console.print)
    console.print(f"open it in a browser: [bold]{path}[/]")


def _parse_input(text: str | None):
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (1, 3) or min(dims) < 1:
        raise CnnkitError(f"--input expects CxHxW such as 3x224x224 (or one size such as 224), got {text!r}")
    return dims[0] if len(dims) == 1 else dims


@app.command("summary")
@handle_errors
def summary_(
    model: str = typer.Argument(..., help="A model name (see `cnnkit models`), or a run folder / checkpoint."),
    input: Optional[str] = _opt("Input size CxHxW, e.g. 1x28x28 (default: the model's own).", "--input", "-i"),
    num_classes: Optional[int] = _opt("Classes of the head, for a model name (default: the model's own).", "--num-classes"),
    explain: bool = typer.Option(False, "--explain", help="Show the guide's formulas filled with each layer's numbers."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | markdown | json."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or meta (shapes only: instant for huge models)."),
):
    """Per-layer table: output shape, parameters, MACs/FLOPs, receptive field, activation memory."""
    from .api import summary as summary_api

    text = summary_api(model, input_size=_parse_input(input), num_classes=num_classes, device=device).render(
        fmt, explain=explain)
    typer.echo(text)


@app.command()
@handle_errors
def bench(
    model: str = typer.Argument("fastnet", help="A model name (see `cnnkit models`), or tv:NAME / timm:NAME."),
    task: Optional[str] = _opt("The task whose training step is timed (default: the model's own).", "--task"),
    batch: int = typer.Option(256, "--batch", "-b", help="Batch size."),
    input: Optional[str] = _opt("Input C,H,W such as 1,28,28, or one side such as 32 (default: the data's).", "--input", "-i"),
    data: Optional[str] = _opt("synthetic (only), or a data set (default: fashion-mnist if found, else shapes).", "--data", "-d"),
    data_dir: Optional[str] = _opt("Folder to look in first for data files (or the image folder).", "--data-dir"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision: auto | off | bf16 | fp16."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="Memory layout of the step."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (warm-up includes compilation)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Batch augmentation of the real-data step (default: the task's training default, e.g. crop=2,hflip=0.5 for classification).", show_default=False),
    steps: int = typer.Option(10, "--steps", help="Timed steps per pass."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed steps before each pass."),
):
    """Training and inference images/s, the share of the machine's matmul peak, and where a step's time goes."""
    from .api import bench as bench_api
    from .perf.bench import render

    res = bench_api(model, task=task, batch_size=batch, input_size=input, data=data, data_dir=data_dir, device=device,
                    amp=amp, channels_last=channels_last, compile=compile, augment=augment, steps=steps,
                    warmup=warmup, log=lambda m: err_console.print(f"[dim]{m}[/]"))
    for part in render(res):
        console.print(part)


@app.command("export")
@handle_errors
def export_(
    run: Path = typer.Argument(..., help="A run folder or a checkpoint folder (best/, last/)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript."),
    output: Optional[Path] = _opt("File to write (default: RUN/export/MODEL.onnx or MODEL.torchscript.pt); "
                                  "OUTPUT.json is written beside it.", "--output", "-o"),
    batch: Optional[int] = _opt("--static: the file's fixed batch size (default 1); --dynamic: only the "
                                "traced example's (default 2).", "--batch", "-b"),
    dynamic: bool = typer.Option(True, "--dynamic/--static", help="Free batch axis, or a fixed one (--batch)."),
    opset: Optional[int] = _opt("ONNX opset (default 17).", "--opset"),
    device: str = typer.Option("cpu", "--device", help="Where TorchScript is traced and checked (cpu: portable). "
                                                       "ONNX always exports and checks on the CPU."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest allowed |exported - PyTorch| on the checks."),
    exporter: str = typer.Option("auto", "--exporter", help="ONNX exporter: auto (TorchScript-based, then "
                                                            "torch.export-based) | legacy | dynamo."),
):
    """Export a trained model to ONNX or TorchScript, normalization inside, checked against PyTorch.

    The file's input `images` is float32 (N, C, H, W) with values in [0, 1]: uint8 pixels / 255,
    resized to the run's input size, RGB (grey for 1 channel). The file subtracts the mean and
    divides by the std itself; its output `logits` (N, classes) is before softmax. Class names,
    input size, mean/std and versions are in the file (ONNX metadata_props, TorchScript cnnkit.json)
    and in OUTPUT.json. The file is run on check batches and kept only if it matches eager
    PyTorch within --tolerance. ONNX needs the onnx and onnxruntime packages (cnnkit's onnx extra).
    """
    from .api import export as export_api

    res = export_api(str(run), format=fmt, output=str(output) if output else None, batch=batch, dynamic=dynamic,
                     opset=opset, device=device, tolerance=tolerance, exporter=exporter)
    m = res.metadata
    table = Table("check input", "batch", "max |exported - PyTorch|", title=f"{m['model']} -> {res.format} "
                  f"({m['exporter']}{', opset ' + str(m['opset']) if 'opset' in m else ''})")
    for c in res.checks:
        table.add_row(c["input"], str(c["batch"]), f"{c['max_abs_diff']:.2e}")
    console.print(table)
    c, h, w = m["input_size"]
    n = "N" if m["batch"] == "dynamic" else m["batch"]
    console.print(f"max abs difference {res.max_abs_diff:.2e} <= {res.tolerance:g}: [bold green]ok[/]")
    console.print(f"wrote [bold]{res.path}[/] and {res.sidecar.name} in {res.seconds:.1f} s\n"
                  f"input '{m['input_name']}': float32 ({n}, {c}, {h}, {w}) in [0, 1], normalized inside; "
                  f"output {', '.join(repr(o) for o in m['outputs'])}: {m['output']}")


@app.command("plan")
@handle_errors
def plan_(
    data: str = typer.Argument(..., help="shapes-volumes | shapes-slices (generated), nnunet (with --data-dir), or "
                                         "an nnU-Net raw folder (dataset.json, imagesTr/, labelsTr/)."),
    data_dir: Optional[str] = _opt("The nnU-Net raw folder (or the folder that holds DATA).", "--data-dir"),
    out: Path = typer.Option(Path("plan.yaml"), "--out", "-o", help="Where to write the plan."),
    budget: Optional[float] = _opt("MB of activation memory the patch and batch may take (default 300, a CPU's; "
                                   "a ~10 GB GPU holds about 7000).", "--budget"),
    num_cases: Optional[int] = _opt("Plan on this many cases (generated: how many to make; a folder: the first "
                                    "in name order).", "--num-cases"),
):
    """nnU-Net's self-configuration: fingerprint the volumes, apply its rules (spacing, patch, pooling, batch,
    normalization, augmentation) and write plan.yaml with the reason of each decision."""
    from .api import plan as plan_api

    p = plan_api(data, data_dir=data_dir, out=str(out), budget=budget, num_cases=num_cases,
                 log=lambda m: console.print(escape(m)))

    def x(v):
        return " x ".join(f"{a:g}" if isinstance(a, float) else str(a) for a in v)

    norm = "; ".join(f"{n['channel']}: {n['scheme']}" + (f" clip [{n['clip'][0]:g}, {n['clip'][1]:g}]"
                                                        if n["scheme"] == "ct" else "") for n in p.normalization)
    rows = [("dims", f"{p.dims}-D", "dims"),
            ("target spacing", f"{x(p.target_spacing)} mm", "target_spacing"),
            ("median shape", x(p.median_shape), "median_shape"),
            ("patch size", x(p.patch_size), "patch_size"),
            ("batch size", str(p.batch_size), "batch_size"),
            ("strides", " ".join("".join(map(str, s)) for s in p.strides), "strides"),
            ("kernel sizes", " ".join("".join(map(str, k)) for k in p.kernel_sizes), "kernel_sizes"),
            ("features", " ".join(map(str, p.features)), "base_features"),
            ("normalization", norm, "normalization"),
            ("rotation", ", ".join(f"{k} {v[0]:g}..{v[1]:g}" for k, v in p.augmentation["rotation"].items()
                                   if k != "p"), "augmentation.rotation"),
            ("dummy 2-D", "on" if p.augmentation["dummy_2d"] else "off", "augmentation.dummy_2d"),
            ("loss", f"{p.loss}, deep supervision {'on' if p.deep_supervision else 'off'}", "loss")]
    table = Table(Column("decision", no_wrap=True), Column("value", no_wrap=True), "why",
                  title=f"plan for {p.dataset} ({p.fingerprint.get('num_cases', '?')} cases)",
                  caption=f"strides and kernels per stage, axes {', '.join(p.axes)}; "
                          f"estimated {p.memory_mb:g} MB of activations, budget {p.budget_mb:g} MB")
    for name, value, key in rows:
        table.add_row(name, escape(value), escape(p.why.get(key, "")))
    console.print(table)
    console.print(f"wrote [bold]{escape(str(out))}[/] (every value with its reason)\n"
                  f"next: cnnkit train --plan {escape(str(out))}")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
