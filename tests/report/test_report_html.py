"""The HTML run report: one self-contained page, its numbers checked against the confusion matrix,
robust to missing parts, and rendered by a real browser (headless Chromium) without errors."""
import base64
import io
import os
import re
import shutil
import subprocess

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnkit import api
from cnnkit.cli import app
from cnnkit.engine.inference import evaluate_checkpoint
from cnnkit.registry import CnnkitError
from cnnkit.report.html import write_report

SECTIONS = ("config", "model", "training", "confusion", "per-class", "mistakes", "gradcam")
quiet = dict(log=lambda *a, **k: None)


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def _cells(fragment: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment, re.S)]


def _images(fragment: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', fragment)


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory):
    """A copy of the shared tiny run (fastnet, shapes 16x16, 2 epochs), free to change."""
    dst = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run.run_dir, dst)
    return dst


@pytest.fixture(scope="module")
def page(run):
    path = write_report(run, max_images=6, **quiet)
    assert path == run / "report.html"
    return path.read_text()


def test_train_writes_the_report(trained_run):
    assert (trained_run.run_dir / "report.html").is_file()  # api.train wrote it at the end


def test_page_is_self_contained_and_complete(run, page):
    for sid in SECTIONS:
        assert "not available" not in _section(page, sid), sid
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    imgs = _images(page)
    assert len(imgs) >= 4
    for src in imgs:  # every picture is an embedded PNG that decodes
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.load()
            assert min(im.size) >= 16
    assert "fastnet" in page and run.name in page
    assert re.search(r"parameters</div><div class=\"v\"[^>]*>\d", page)


def test_per_class_table_and_galleries_match_the_confusion_matrix(run, page):
    ev = evaluate_checkpoint(run, device="cpu")
    cm = ev["confusion"].double()  # (K, K): rows true, columns predicted
    tp = cm.diag()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp(min=1), torch.zeros_like(tp))
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0 * tp)
    rows = [r for r in _cells(_section(page, "per-class")) if r]
    assert [r[0] for r in rows[:-1]] == list(ev["classes"])
    for i, r in enumerate(rows[:-1]):
        got = [float(v) for v in r[1:4]]
        assert got == pytest.approx([precision[i].item(), recall[i].item(), f1[i].item()], abs=6e-4), r
        assert int(r[4].replace(",", "")) == int(cm[i].sum())
    wrong = int(cm.sum() - tp.sum())
    mistakes = _section(page, "mistakes")
    assert len(_images(mistakes)) == min(6, wrong)
    for cap in re.findall(r"<figcaption>(.*?)</figcaption>", mistakes, re.S):
        true, pred = re.search(r"<b>(.*?)</b>.*class='no'>(.*?)</span>", cap, re.S).groups()
        assert true != pred and true in ev["classes"] and pred in ev["classes"]
    assert len(_images(_section(page, "gradcam"))) == 2 * min(6, ev["images"])  # image + overlay


def test_missing_parts_leave_a_note_not_a_crash(run, tmp_path, monkeypatch):
    part = tmp_path / "stopped"
    shutil.copytree(run, part)
    shutil.rmtree(part / "best")             # only last/ left, as in a run stopped early
    (part / "metrics.csv").unlink()
    import cnnkit.report.classify as report_classify

    monkeypatch.setattr(report_classify, "MAX_LABELLED_CLASSES", 4)  # 8 classes: the many-class picture
    text = write_report(part, max_images=2, **quiet).read_text()
    assert "no epoch finished" in _section(text, "training")
    confusion = _section(text, "confusion")
    assert "not available" not in confusion and "last/" in confusion
    (src,) = _images(confusion)
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        assert im.size == (512, 512)  # 8 x 8 cells of 64 pixels

    import cnnkit.engine.inference as inference

    def broken(*a, **k):
        raise RuntimeError("data files moved")

    monkeypatch.setattr(inference, "evaluate_checkpoint", broken)
    logs = []
    text = write_report(part, log=logs.append).read_text()
    for sid in ("confusion", "per-class", "mistakes", "gradcam"):
        assert "data files moved" in _section(text, sid)
    assert "not available" not in _section(text, "model")
    assert sum("left out" in line for line in logs) == 4


def test_cli_report_and_bad_input(run, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(run), "--max-images", "2"])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output
    assert len(_images(_section((run / "report.html").read_text(), "mistakes"))) <= 2
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.yaml").write_text((run / "config.yaml").read_text())
    for target, msg in ((tmp_path / "nope", "no run folder"), (tmp_path, "not a run folder"),
                        (fake, "no checkpoint")):
        r = runner.invoke(app, ["report", str(target)])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output
        assert not (target / "report.html").exists()
    with pytest.raises(CnnkitError):
        api.report(str(tmp_path / "nope"))


def test_report_false_skips_it_and_a_failure_is_one_warning(tiny, monkeypatch):
    import cnnkit.report.html as report_html

    def refuse(*a, **k):
        raise AssertionError("report written although report=false")

    monkeypatch.setattr(report_html, "write_report", refuse)
    r = CliRunner().invoke(app, ["train", "--data", "shapes", "--set", "num_train=128", "--set", "num_val=32",
                                 "--image-size", "16", "--epochs", "1", "--batch-size", "64", "-q",
                                 "--project", tiny["project"], "--name", "noreport", "--set", "report=false"])
    assert r.exit_code == 0, r.output
    run_dir = os.path.join(tiny["project"], "noreport")
    assert os.path.isfile(os.path.join(run_dir, "best", "meta.json"))
    assert not os.path.exists(os.path.join(run_dir, "report.html"))
    logs = []
    api._report_after_training(run_dir, "cpu", logs.append)  # what train does; the failure is one line
    assert len(logs) == 1 and logs[0].startswith("warning: report.html was not written")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="chromium is not installed (Debian: apt-get install chromium); CI installs it")
def test_page_renders_in_headless_chromium(run, page, tmp_path):
    assert CHROMIUM, "CI must have chromium (.ci/run installs it)"
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    url = html_file.resolve().as_uri()
    shot = tmp_path / "report.png"
    r = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--hide-scrollbars",
                  "--window-size=1280,4000", url)
    assert shot.is_file() and shot.stat().st_size > 50_000, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console  # the page has no script: nothing may reach the console
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        grey = torch.from_numpy(__import__("numpy").asarray(im.convert("L"), dtype="float32"))
    assert grey.std() > 20  # text, tables and pictures, not a blank page
    assert grey[:1000].std() > 20 and grey[2000:].std() > 10  # content all the way down
    r = _chromium(tmp_path, "--dump-dom", url)
    dom = r.stdout
    assert dom.rstrip().endswith("</html>")
    for sid in SECTIONS:
        assert f'id="{sid}"' in dom
    assert len(_images(dom)) == len(_images(page))
