"""`cnnkit plan` then `cnnkit train --plan` end to end on a few tiny generated volumes: the run, its
metrics and checkpoint, eval of the checkpoint, the report, resume, and the user errors."""
import csv
import json

import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.api import plan as make_plan
from cnnkit.cli import app
from cnnkit.registry import CnnkitError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    make_plan("shapes-volumes", out=str(path), num_cases=8, budget=20)
    return path


@pytest.fixture(scope="module")
def run(plan_file, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    res = cnnkit.train(plan=str(plan_file), epochs=2, project=str(project), quiet=True, report=False,
                       task_args={"patches_per_epoch": 4}, model_args={"base_features": 4}, log=lambda *a: None)
    return res


def test_a_planned_run_trains_validates_and_saves(run, plan_file):
    rows = list(csv.DictReader(open(run.run_dir / "metrics.csv")))
    assert len(rows) == 2 and {"val_dice", "val_case_dice", "val_iou", "val_loss"} <= set(rows[0])
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows) and run.monitor == "val_dice"
    meta = json.loads((run.run_dir / "last" / "meta.json").read_text())
    plan = cnnkit.plan.Plan.load(plan_file)
    assert meta["task"] == "volume" and meta["model"] == "plan_unet"
    assert meta["input_spec"] == {"kind": "volume", "shape": [1, *plan.patch_size]}
    assert meta["task_options"]["plan"]["patch_size"] == plan.patch_size  # the plan travels with the checkpoint
    assert meta["model_kwargs"]["strides"] == plan.strides and meta["classes"] == plan.classes


def test_eval_of_the_checkpoint_gives_the_runs_own_numbers(run):
    res = cnnkit.evaluate(str(run.run_dir / "last"), device="cpu")
    last = list(csv.DictReader(open(run.run_dir / "metrics.csv")))[-1]
    assert res["dice"] == pytest.approx(float(last["val_dice"]), abs=1e-6)
    assert res["images"] == len(res["case_names"]) and res["task"] == "volume"
    assert any("foreground Dice" in line for line in res["summary"]["lines"])


def test_report_has_the_volume_sections(run):
    from cnnkit.report.html import write_report

    html = write_report(run.run_dir, device="cpu", log=lambda *a: None).read_text()
    for title in ("The plan and its reasons", "Dice per class and per case", "Worst and best cases"):
        assert title in html
    assert "patch_size" in html and "class=\"warn\"" not in html


def test_resume_continues_exactly(plan_file, tmp_path):
    kw = dict(plan=str(plan_file), project=str(tmp_path), quiet=True, report=False,
              task_args={"patches_per_epoch": 4}, model_args={"base_features": 4}, log=lambda *a: None)
    whole = cnnkit.train(epochs=2, name="whole", **kw)
    part = cnnkit.train(epochs=2, name="part", stop_after=1, **kw)
    cnnkit.train(resume=str(part.run_dir), log=lambda *a: None)
    a = list(csv.DictReader(open(whole.run_dir / "metrics.csv")))
    b = list(csv.DictReader(open(part.run_dir / "metrics.csv")))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_dice"] for r in a] == [r["val_dice"] for r in b]


def test_user_errors_are_one_line(tmp_path, plan_file, run):
    r = CliRunner().invoke(app, ["predict", str(run.run_dir), str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "reads image files only" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", "--plan", str(tmp_path / "nope.yaml")])
    assert r.exit_code != 0 and "no such plan file" in r.output and "Traceback" not in r.output
    with pytest.raises(CnnkitError, match="from a plan"):
        cnnkit.train(model="plan_unet", data="shapes-volumes", epochs=1, project=str(tmp_path), quiet=True,
                     log=lambda *a: None)
    with pytest.raises(CnnkitError, match="augments as its plan says"):
        cnnkit.train(plan=str(plan_file), augment="hflip=0.5", epochs=1, project=str(tmp_path), quiet=True,
                     task_args={"patches_per_epoch": 2}, model_args={"base_features": 4}, log=lambda *a: None)


def test_a_2d_plan_trains_on_slices(tmp_path):
    path = tmp_path / "plan2d.yaml"
    p = make_plan("shapes-slices", out=str(path), num_cases=8, budget=10)
    assert p.dims == 2 and len(p.patch_size) == 2
    res = cnnkit.train(plan=str(path), epochs=1, project=str(tmp_path), quiet=True, report=False,
                       task_args={"patches_per_epoch": 4}, model_args={"base_features": 4}, log=lambda *a: None)
    row = res.history[-1]
    assert 0.0 <= row["val_dice"] <= 1.0 and row["val_loss"] > 0
