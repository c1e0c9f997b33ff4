"""plan.yaml: written for people (reasons as comments and in `why:`), read back exactly, one line for each
mistake; and `cnnkit plan` through Typer's CliRunner."""
import pytest
import yaml
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.data.volumes import load_volumes
from cnnkit.plan import Plan, fingerprint, make_plan
from cnnkit.registry import CnnkitError

runner = CliRunner()


@pytest.fixture(scope="module")
def plan():
    return make_plan(fingerprint(load_volumes("shapes-volumes", num_cases=8)))


def test_yaml_round_trip_is_exact(plan, tmp_path):
    path = plan.save(tmp_path / "plan.yaml")
    back = Plan.load(path)
    assert back == plan and back.to_dict() == plan.to_dict()
    assert back.features == plan.features and back.divisible_by == plan.divisible_by
    text = path.read_text()
    assert text.startswith("# cnnkit plan 1: nnU-Net's rules applied to shapes-volumes (8 cases, 3-D).")
    assert "patch_size: [" in text and "\n# the median shape" in text  # reason above the value
    assert "\nwhy:\n  dims:" in text and "  # anisotropic data" in text
    assert all(len(line) <= 120 for line in text.splitlines())
    again = tmp_path / "again.yaml"
    back.save(again)
    assert again.read_text() == text


def test_edited_values_are_read(plan, tmp_path):
    path = plan.save(tmp_path / "plan.yaml")
    data = yaml.safe_load(path.read_text())
    data["batch_size"] = 4
    data["augmentation"]["mirror"]["p"] = 0.0
    path.write_text(yaml.safe_dump(data))
    back = Plan.load(path)
    assert back.batch_size == 4 and back.augmentation["mirror"]["p"] == 0.0


def _edit(plan, tmp_path, fn):
    data = plan.to_dict()
    fn(data)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("fn, message", [
    (lambda d: d.update(patch_szie=[1, 2, 3]), r"unknown plan key 'patch_szie'. Did you mean 'patch_size'"),
    (lambda d: d.pop("strides"), r"missing plan key strides"),
    (lambda d: [d.pop("dims"), d.pop("loss")], r"missing plan keys dims, loss"),
    (lambda d: d.update(patch_size=[*d["patch_size"][:2], 60]), r"patch_size x = 60 is not a multiple of \d+"),
    (lambda d: d.update(strides=d["strides"][1:], kernel_sizes=d["kernel_sizes"][1:]), r"strides\[0\] must be all 1"),
    (lambda d: d.update(normalization=[{"channel": "CT", "scheme": "minmax"}]), r"scheme of ct, zscore, none"),
    (lambda d: d.update(dims=4), r"dims must be 2 or 3"),
    (lambda d: d.update(version=9), r"plan version 9"),
])
def test_bad_plan_files_are_one_line(plan, tmp_path, fn, message):
    path = _edit(plan, tmp_path, fn)
    with pytest.raises(CnnkitError, match=message) as e:
        Plan.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_file_bad_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(CnnkitError, match=r"no such plan file \(write one with `cnnkit plan DATA"):
        Plan.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dims: 3\npatch_size: [1, 2\n")
    with pytest.raises(CnnkitError, match=r"bad.yaml: not valid YAML at line \d+, column \d+"):
        Plan.load(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(CnnkitError, match="expected a YAML mapping of plan keys"):
        Plan.load(bad)


def test_cli_plan_prints_the_decisions_and_writes_the_file(tmp_path):
    out = tmp_path / "p.yaml"
    r = runner.invoke(app, ["plan", "shapes-volumes", "--num-cases", "6", "--out", str(out), "--budget", "300"])
    assert r.exit_code == 0, r.output
    for word in ("shapes-volumes: 6 cases", "target spacing", "patch size", "normalization", "dummy 2-D",
                 f"wrote {out}", "cnnkit train --plan"):
        assert word in r.output.replace("\n", " ") or word in r.output
    p = Plan.load(out)
    assert p.num_cases == 6 and p.budget_mb == 300 and p.dims == 3


def test_cli_plan_default_path_is_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["plan", "shapes-slices", "--num-cases", "4"])
    assert r.exit_code == 0, r.output
    assert Plan.load(tmp_path / "plan.yaml").dims == 2


@pytest.mark.parametrize("args, message", [
    (["plan", "shapes-volume"], "Did you mean 'shapes-volumes'"),
    (["plan", "shapes-volumes", "--budget", "-1"], "budget must be a positive number"),
    (["plan", "shapes-volumes", "--num-cases", "2", "--out", "/nonexistent/dir/p.yaml"], "does not exist"),
])
def test_cli_plan_bad_input_is_one_line(args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
