"""`cnnkit explain` through Typer's CliRunner: the new figure methods write their PNGs (with and without
images), method aliases and suggestions, and `--evaluate` prints a table of scores in [0, 1]. The run is
an untrained FastNet checkpoint written directly (no training: the figures and the table only need a
model and its meta)."""
import re

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnkit.api import evaluate_explanations
from cnnkit.cli import app
from cnnkit.data.shapes import SHAPE_CLASSES, render_scene
from cnnkit.engine.checkpoint import save_checkpoint
from cnnkit.models import create_model
from cnnkit.registry import CnnkitError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], terminal_width=200)


def make_run(folder, data="shapes"):
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=8, in_chans=3)
    meta = dict(model="fastnet", model_args={}, task="classify", num_classes=8, in_chans=3,
                classes=list(SHAPE_CLASSES), input_size=[3, 32, 32], mean=[0.5] * 3, std=[0.25] * 3,
                data=dict(name=data, seed=0))
    save_checkpoint(folder / "best", {k: v.contiguous() for k, v in model.state_dict().items()}, meta)
    return folder


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_cli")
    folder = make_run(root / "run")
    images = []
    for i in range(2):
        s = render_scene(1, i, size=32, channels=3, num_objects=1)
        images.append(root / f"scene{i}.png")
        Image.fromarray(s.image.permute(1, 2, 0).numpy()).save(images[-1])
    return folder, images


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_new_methods_write_their_png(shapes_run):
    folder, images = shapes_run
    for method, args in (("inversion", images[:1]), ("erf", images), ("erf", []), ("actmax", []),
                         ("filters", []), ("gradcam++", images), ("layercam", images)):
        r = run("explain", folder, *args, "--method", method, "--steps", 2)
        assert r.exit_code == 0, (method, r.output)
        name = {"gradcam++": "gradcam_pp"}.get(method, method)
        png = folder / "explain" / f"{name}.png"
        assert f"wrote {png}" in r.output.replace("\n", "") and is_png(png), (method, r.output)
    r = run("explain", folder, "--method", "erf", "--layer", "layer2", "-o", folder / "erf2.png")
    assert r.exit_code == 0 and is_png(folder / "erf2.png"), r.output


def test_methods_and_images_are_checked(shapes_run):
    folder, images = shapes_run
    for args, message in ((["--method", "gradcamm", *images], "Did you mean 'gradcam'"),
                          (["--method", "inversoin", *images], "Did you mean 'inversion'"),
                          (["--method", "gradcam"], "needs at least one IMAGE"),
                          (["--method", "actmax", "--layer", "layer9"], "Did you mean 'layer3'"),
                          (["--evaluate", *images], "drop the IMAGE")):
        r = run("explain", folder, *args)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, (args, r.output)


def test_evaluate_prints_scores_in_unit_range(shapes_run):
    folder, _ = shapes_run
    r = run("explain", folder, "--evaluate", "--num", 2, "--methods", "cam,gradcam++")
    assert r.exit_code == 0, r.output
    for name in ("cam", "gradcam_pp", "centre prior"):
        assert f"│ {name}" in r.output, r.output
    # 2 methods x 4 score pairs + the prior's 2 pairs (cells may wrap at 80 columns: read the whole table)
    numbers = [float(v) for v in re.findall(r"\d+\.\d{3}", r.output)]
    assert len(numbers) == 2 * 8 + 4 and all(0.0 <= v <= 1.0 for v in numbers), r.output
    assert "2 single-object shapes scenes, 3x32x32" in r.output.replace("\n", " ")
    assert "note cam:" in r.output  # FastNet's max-pool head: CAM is only the approximation


def test_evaluate_needs_a_shapes_run(tmp_path):
    folder = make_run(tmp_path / "mnist_run", data="mnist")
    with pytest.raises(CnnkitError, match="trained on mnist"):
        evaluate_explanations(str(folder), num=1)
    r = run("explain", folder, "--evaluate", "--num", 1)
    assert r.exit_code == 1 and "needs a run trained on shapes" in r.output
