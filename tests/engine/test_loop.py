import csv
import math

import pytest
import torch

import cnnkit
from cnnkit.engine import checkpoint as ck
from cnnkit.registry import CnnkitError

quiet = dict(log=lambda *a, **k: None)


def _weights(run, which="last"):
    return ck.load_weights(ck.resolve_checkpoint(run, prefer=which))


def test_train_writes_a_complete_run(tiny):
    res = cnnkit.train(**tiny, **quiet)
    run = res.run_dir
    for f in ("config.yaml", "metrics.csv", "curves.png", "confusion_matrix.png", "best/weights.safetensors",
              "best/meta.json", "last/weights.safetensors", "last/state.json"):
        assert (run / f).is_file(), f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    meta = ck.load_meta(run / "best")
    assert meta["model"] == "fastnet" and meta["input_size"] == [3, 16, 16] and len(meta["classes"]) == 8
    assert res.best_metric == max(float(r["val_acc"]) for r in rows)
    # a second run with the same name does not overwrite the first
    res2 = cnnkit.train(**dict(tiny, epochs=1), **quiet)
    assert res2.run_dir != run and (run / "metrics.csv").is_file()


def test_resume_is_exact(tiny):
    """A run stopped after epoch 1 and resumed ends with the same weights as one that never stopped."""
    opts = dict(tiny, epochs=3, ema=0.9, augment="crop=2,hflip=0.5", model_args={"drop_rate": 0.2})
    full = cnnkit.train(**dict(opts, name="full"), **quiet)
    part = cnnkit.train(**dict(opts, name="part"), stop_after=1, **quiet)
    assert ck.load_meta(part.run_dir / "last")["epoch"] == 1
    resumed = cnnkit.train(resume=str(part.run_dir), **quiet)
    assert resumed.run_dir == part.run_dir
    a, b = _weights(full.run_dir), _weights(part.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.DictReader(open(part.run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    full_rows = list(csv.DictReader(open(full.run_dir / "metrics.csv")))
    assert [r["val_acc"] for r in rows] == [r["val_acc"] for r in full_rows]


def test_resume_refuses_changed_settings_and_finished_runs(tiny):
    res = cnnkit.train(**dict(tiny, epochs=1), **quiet)
    with pytest.raises(CnnkitError, match="only"):
        cnnkit.train(resume=str(res.run_dir), lr=0.5, **quiet)
    with pytest.raises(CnnkitError, match="already finished"):
        cnnkit.train(resume=str(res.run_dir), **quiet)


def test_diverging_run_is_a_clear_error_and_touches_no_other_run(tiny):
    res = cnnkit.train(**dict(tiny, epochs=1, name="nan"), **quiet)
    before = {p.name: p.read_bytes() for p in (res.run_dir / "last").iterdir()}
    with pytest.raises(CnnkitError, match="loss became"):
        cnnkit.train(**dict(tiny, name="nan", lr=1e30, optimizer="sgd", schedule="none", weight_decay=0.0), **quiet)
    after = {p.name: p.read_bytes() for p in (res.run_dir / "last").iterdir()}
    assert before == after


def test_nan_mid_run_leaves_previous_epoch_intact(tiny, monkeypatch):
    import cnnkit.engine.loop as loop

    res = cnnkit.train(**dict(tiny, epochs=1, name="good"), **quiet)
    good = (res.run_dir / "last" / "weights.safetensors").read_bytes()
    # poison the task loss from the second epoch on
    orig = loop.create_task

    def poisoned(*a, **k):
        task = orig(*a, **k)
        real = task.loss
        task.loss = lambda out, y: real(out, y) * float("nan")
        return task

    monkeypatch.setattr(loop, "create_task", poisoned)
    with pytest.raises(CnnkitError, match="loss became nan"):
        cnnkit.train(resume=str(res.run_dir), epochs=2, **quiet)
    assert (res.run_dir / "last" / "weights.safetensors").read_bytes() == good
    assert ck.load_meta(res.run_dir / "last")["epoch"] == 1


def test_early_stopping(tiny):
    # lr so small nothing improves after the first epoch's value is recorded as best
    res = cnnkit.train(**dict(tiny, epochs=6, early_stop=1, monitor="val_loss", lr=1e-9, schedule="none",
                              optimizer="sgd"), **quiet)
    assert res.stopped_early and len(res.history) < 6


@pytest.mark.parametrize("opts", [
    dict(optimizer="adam", lr=1e-3, schedule="cosine", warmup_epochs=1, label_smoothing=0.1, grad_clip=1.0),
    dict(augment="strong", tta=True, amp="off", channels_last=False),
    dict(model="seed_cnn", recipe="seed", data="shapes", image_size=16),
    dict(model="lenet5", channels=1, image_size=32, optimizer="adam", lr=1e-3),
])
def test_options_train(tiny, opts):
    res = cnnkit.train(**dict(tiny, epochs=1, **opts), **quiet)
    assert math.isfinite(res.history[-1]["train_loss"] if isinstance(res.history[-1]["train_loss"], float)
                         else float(res.history[-1]["train_loss"]))


def test_evaluate_and_predict_api(trained_run, tmp_path):
    res = cnnkit.evaluate(str(trained_run.run_dir), device="cpu")
    assert res["images"] == 64 and res["confusion"].sum() == 64
    assert res["acc"] == pytest.approx(trained_run.best_metric, abs=1e-6)
    model, meta = cnnkit.load_model(str(trained_run.run_dir))
    assert meta["model"] == "fastnet" and not model.training
    from PIL import Image

    from cnnkit.data.shapes import make_classification

    imgs, labels = make_classification(2, seed=5, size=16)
    paths = []
    for i, im in enumerate(imgs):
        p = tmp_path / f"{i}.png"
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(p)
        paths.append(str(p))
    out = cnnkit.predict(str(trained_run.run_dir), paths, topk=3, device="cpu")
    assert len(out) == 2 and len(out[0]["top"]) == 3
    probs = [p for _, p in out[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
