"""The command line through Typer's CliRunner: output, exit codes, and no damage on bad input."""
import hashlib

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app

runner = CliRunner()
TINY_ARGS = ["--data", "shapes", "--set", "num_train=256", "--set", "num_val=64", "--image-size", "16",
             "--epochs", "1", "--batch-size", "64", "-q"]


def _snapshot(run):
    return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_eval_predict(tmp_path):
    r = run("train", *TINY_ARGS, "--project", tmp_path / "runs", "--name", "t")
    assert r.exit_code == 0, r.output
    assert "done" in r.output and "cnnkit eval" in r.output and "epoch 1" in r.output
    run_dir = tmp_path / "runs" / "t"
    r = run("eval", run_dir, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "circle" in r.output
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(img)
    r = run("predict", run_dir, img, "-k", "2", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "x.png:" in r.output and r.output.count("%") == 2


def test_models_and_datasets():
    r = run("models", "lenet*")
    assert r.exit_code == 0 and "lenet5_modern" in r.output and "fastnet" not in r.output
    r = run("models", "nothing-like-this*")
    assert r.exit_code == 1 and "no model matches" in r.output
    r = run("datasets")
    assert r.exit_code == 0 and "fashion-mnist" in r.output and "shapes" in r.output


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet_18"], "Did you mean 'resnet18'"),
    (["--model", "fastnett"], "Did you mean 'fastnet'"),
    (["--optimizer", "adamm"], "Did you mean 'adam'"),
    (["--lr", "-0.1"], "lr must be a positive"),
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--data", "fashion_mnist"], "Did you mean 'fashion-mnist'"),
    (["--set", "learning_rate=0.1"], "unknown config key"),
    (["--augment", "crop=4,flipp=0.5"], "flip"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    r = run("train", *TINY_ARGS, "--project", tmp_path / "runs", *args)
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_dataset_names_the_places_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "env"))
    r = run("train", "--data", "cifar10", "--data-dir", tmp_path / "nothing", "--project", tmp_path / "runs", "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert str(tmp_path / "nothing") in r.output and str(tmp_path / "env") in r.output and "--download" in r.output


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("train", "--data", "imagefolder", "--data-dir", empty, "--project", tmp_path / "runs", "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    from PIL import Image

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "bad.png").write_bytes(b"this is not a png")
    r = run("train", "--data", "imagefolder", "--data-dir", root, "--val", "0.5", "--project", tmp_path / "runs", "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output
    # a corrupt image among good ones is skipped, and training goes on
    for c, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        for i in range(8):
            Image.new("RGB", (20, 20), colour).save(root / c / f"{i}.png")
    r = run("train", "--data", "imagefolder", "--data-dir", root, "--val", "0.25", "--epochs", "1", "--batch-size", "4",
            "--project", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r.output


def test_failures_never_damage_an_existing_run(tmp_path):
    r = run("train", *TINY_ARGS, "--project", tmp_path / "runs", "--name", "keep")
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "runs" / "keep"
    before = _snapshot(run_dir)
    for args in (["train", "--resume", run_dir, "--lr", "0.5"],            # settings may not change
                 ["train", "--resume", run_dir],                           # already finished
                 ["train", "--resume", tmp_path / "nope"],                  # no such run
                 ["eval", tmp_path / "nope"],
                 ["predict", run_dir, tmp_path / "missing.png"]):
        r = run(*args)
        assert r.exit_code == 1 and "Traceback" not in r.output, (args, r.output)
    assert _snapshot(run_dir) == before


def test_checkpoint_of_another_model_is_refused(tmp_path):
    import json

    r = run("train", *TINY_ARGS, "--project", tmp_path / "runs", "--name", "a")
    assert r.exit_code == 0, r.output
    meta_path = tmp_path / "runs" / "a" / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"] = "seed_cnn"  # weights of fastnet, labelled as another model
    meta_path.write_text(json.dumps(meta))
    r = run("eval", tmp_path / "runs" / "a" / "best", "--device", "cpu")
    assert r.exit_code == 1 and "does not fit this model" in r.output and "Traceback" not in r.output


def test_summary_command():
    import json

    r = run("summary", "seed_cnn", "--input", "3x32x32", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["params"] == 94_986 and d["macs"] == d["flops"] // 2 > 0
    r = run("summary", "seed_cnn", "--input", "3x32x32", "--explain", "--format", "markdown")
    assert r.exit_code == 0 and "(3·3·3 + 1)·32 = 896" in r.output, r.output
    r = run("summary", "seed_cnn", "--input", "3by32")
    assert r.exit_code == 1 and "CxHxW" in r.output


def test_explain_command(tmp_path):
    from PIL import Image

    from cnnkit.data.shapes import make_classification

    r = run("train", *TINY_ARGS, "--model", "seed_cnn", "--project", tmp_path / "runs", "--name", "e")
    assert r.exit_code == 0, r.output
    imgs, _ = make_classification(2, seed=3, size=16)
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(paths[-1])
    run_dir = tmp_path / "runs" / "e"
    for method in ("cam", "gradcam", "guided_backprop", "featuremaps", "filters"):
        r = run("explain", run_dir, *paths, "--method", method)
        assert r.exit_code == 0, (method, r.output)
        png = run_dir / "explain" / f"{method}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run("explain", run_dir, paths[0], "--method", "gradcam", "--target", "star", "-o", tmp_path / "s.png")
    assert r.exit_code == 0 and (tmp_path / "s.png").is_file(), r.output
    for args, message in ((["--method", "gradcan"], "Did you mean 'gradcam'"),
                          (["--target", "hexagon"], "unknown class"),
                          (["--target", "99"], "out of range"),
                          (["--layer", "featurez"], "Did you mean")):
        r = run("explain", run_dir, paths[0], *args)
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, (args, r.output)
