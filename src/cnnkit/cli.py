"""The `cnnkit` command line: thin Typer commands, each calling one function of the Python API."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
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
        except CnnkitError as e:
            err_console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
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
    data: Optional[str] = _opt("Data set: shapes (built in), fashion-mnist, mnist, cifar10, cifar100, imagefolder.", "--data", "-d"),
    model: Optional[str] = _opt("Model name (see `cnnkit models`), or tv:NAME / timm:NAME.", "--model", "-m"),
    weights: Optional[str] = _opt("Start from pretrained weights: a torchvision .pth file or cnnkit .safetensors.", "--weights"),
    epochs: Optional[int] = _opt("Number of epochs.", "--epochs", "-e"),
    batch_size: Optional[int] = _opt("Batch size.", "--batch-size", "-b"),
    lr: Optional[float] = _opt("Peak learning rate.", "--lr"),
    optimizer: Optional[str] = _opt("sgd | momentum | nesterov | adam | adamw | rmsprop.", "--optimizer"),
    schedule: Optional[str] = _opt("none | step | cosine | onecycle.", "--schedule"),
    weight_decay: Optional[float] = _opt("L2 weight decay (not on norms and biases).", "--weight-decay", "--wd"),
    label_smoothing: Optional[float] = _opt("Label smoothing in [0, 1).", "--label-smoothing"),
    augment: Optional[str] = _opt("none | light | standard | strong, or e.g. 'crop=4,hflip=0.5,cutmix=1'.", "--augment"),
    ema: Optional[float] = _opt("EMA decay of the weights, e.g. 0.999 (0 = off).", "--ema"),
    early_stop: Optional[int] = _opt("Stop after N epochs without improvement of --monitor.", "--early-stop"),
    data_dir: Optional[str] = _opt("Folder to look in first for data files (or the image folder).", "--data-dir"),
    download: Optional[bool] = typer.Option(None, "--download", help="Allow downloading a missing data set.", show_default=False),
    val: Optional[str] = _opt("'test' (official split) or a held-out fraction of train such as 0.1.", "--val"),
    image_size: Optional[int] = _opt("Resize images to this size at load.", "--image-size"),
    device: Optional[str] = _opt("auto | cpu | cuda | cuda:N.", "--device"),
    amp: Optional[str] = _opt("Mixed precision: auto | off | bf16 | fp16.", "--amp"),
    compile: Optional[bool] = typer.Option(None, "--compile", help="torch.compile the model.", show_default=False),
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
        data=data, model=model, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay, label_smoothing=label_smoothing, augment=augment, ema=ema, early_stop=early_stop,
        data_dir=data_dir, download=download, val=val, image_size=image_size, device=device, amp=amp,
        compile=compile, seed=seed, name=name, project=project, recipe=recipe).items() if v is not None}
    if quiet:
        opts["quiet"] = True
    from .config import parse_sets

    opts.update(parse_sets(set_))
    res = train_api(config=str(config) if config else None, resume=str(resume) if resume else None,
                    log=console.print, **opts)
    metric = f"{res.best_metric:.2%}" if res.monitor == "val_acc" else f"{res.best_metric:.4f}"
    console.print(f"\n[bold green]done[/]: best {res.monitor} {metric} at epoch {res.best_epoch}; "
                  f"run saved in [bold]{res.run_dir}[/]")
    console.print("next:\n"
                  f"  cnnkit eval {res.run_dir}\n"
                  f"  cnnkit predict {res.run_dir} IMAGE.png\n"
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
    line = f"loss {res['loss']:.4f}  accuracy {res['acc']:.2%}"
    if "acc5" in res:
        line += f"  top-5 {res['acc5']:.2%}"
    console.print(line)
    cm = res["confusion"]
    table = Table("class", "accuracy", "images", title="per class")
    for i, c in enumerate(res["classes"]):
        total = int(cm[i].sum())
        table.add_row(str(c), f"{cm[i, i].item() / max(total, 1):.2%}", f"{total:,}")
    console.print(table)


@app.command()
@handle_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="A run folder or checkpoint folder."),
    images: List[Path] = typer.Argument(..., help="Image files (any format PIL reads)."),
    topk: int = typer.Option(3, "--topk", "-k", help="How many classes to show per image."),
    device: str = typer.Option("auto", "--device"),
):
    """Classify image files with a trained model: top-k classes and probabilities."""
    from .api import predict as predict_api

    for r in predict_api(str(checkpoint), [str(p) for p in images], topk=topk, device=device):
        best = ", ".join(f"{name} {p:.1%}" for name, p in r["top"])
        console.print(f"{r['image']}: {best}")


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
    images: List[Path] = typer.Argument(..., help="Image files to explain."),
    method: str = typer.Option("gradcam", "--method", "-m",
                               help="cam | gradcam | gradcam_pp | guided_backprop | guided_gradcam | featuremaps | filters."),
    layer: Optional[str] = _opt("Layer to look at (default: the last convolutional stage).", "--layer"),
    target: Optional[str] = _opt("Class name or index to explain (default: the predicted class).", "--target"),
    out: Optional[Path] = _opt("Where to write the PNG (default: RUN/explain/METHOD.png).", "--out", "-o"),
):
    """Show what a trained model looks at: class activation maps, gradients, feature maps, filters."""
    from .api import explain as explain_api

    path = explain_api(str(checkpoint), [str(p) for p in images], method=method, layer=layer, target=target,
                       out=str(out) if out else None)
    console.print(f"wrote {path}")


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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
