"""`cnnkit bench`: figures that are positive and consistent with each other, FLOPs against PyTorch's
own counter, and clean errors. No speed is asserted: the machine is shared."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.perf import bench as B
from cnnkit.registry import CnnkitError

TINY = dict(input_size=16, batch_size=16, steps=3, warmup=1, peak_budget_s=0.1)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine spinning OpenMP threads make timings erratic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_api_on_real_data(one_thread):
    r = cnnkit.api.bench("fastnet", data="shapes", **TINY)
    assert r["data"] == "shapes" and r["input_size"] == [3, 16, 16] and r["num_classes"] == 8
    assert r["machine"]["threads"] == 1 and r["machine"]["cores"] >= 1
    for key in ("train", "infer"):
        assert set(r[key]) == {"synthetic", "real"}
        for fig in r[key].values():
            assert fig["images_per_s"] > 0 and math.isfinite(fig["images_per_s"])
            assert fig["images_per_s"] * fig["step_ms"] == pytest.approx(16 * 1000)
    # the phases add up to the instrumented step, which is about the throughput pass's step
    sp = r["split"]
    parts = sum(sp[k] for k in B.PHASES)
    assert all(sp[k] >= 0 for k in B.PHASES) and parts == pytest.approx(sp["total"])
    step_ms = r["train"]["real"]["step_ms"]
    assert step_ms / 5 < sp["total"] < step_ms * 5, (sp, step_ms)
    assert sp["source"] == "shapes" and sp["steps"] == 3
    assert 0 < r["peak_fraction"] <= 1.5 and r["peak"]["gflops"] > 0
    assert r["peak"]["dtype"] == ("bfloat16" if r["amp"] == "bfloat16" else "float32")
    # FLOPs: PyTorch's counter on the same model gives the same forward count; training = 3 x forward
    model = cnnkit.create_model("fastnet", num_classes=8, in_chans=3).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, 16, 16))
    assert r["flops"]["infer_flops"] == fc.get_total_flops()
    assert r["flops"]["train_flops"] == 3 * r["flops"]["forward_flops"] == 6 * r["flops"]["forward_macs"]
    tr = r["train"]["real"]
    assert tr["gflops"] == pytest.approx(r["flops"]["train_flops"] * tr["images_per_s"] / 1e9)


def test_matmul_peak_and_helpers():
    p = B.matmul_peak(torch.device("cpu"), torch.float32, budget_s=0.02, max_n=128)
    assert p["n"] == 128 and p["dtype"] == "float32" and p["gflops"] > 0
    assert B.parse_input("1,28,28") == (1, 28, 28) and B.parse_input("3x32x32") == (3, 32, 32)
    assert B.parse_input("32") == 32 and B.parse_input(None) is None and B.parse_input((1, 8, 8)) == (1, 8, 8)
    for bad in ("a,b", "1,28", "0", "3,32,-1", "", (1, 2)):
        with pytest.raises(CnnkitError, match="--input expects"):
            B.parse_input(bad)
    info = dict(cores=2, load_avg_1min=5.0)
    assert "OMP_WAIT_POLICY=passive" in B.load_warning(info)
    assert "OMP_WAIT_POLICY" not in B.load_warning(dict(info, omp_wait_policy="passive"))
    assert B.load_warning(dict(info, load_avg_1min=1.5)) is None


runner = CliRunner()


def test_cli_prints_the_tables(one_thread):
    r = runner.invoke(app, ["bench", "fastnet", "--data", "synthetic", "--input", "3,16,16", "--batch", "16",
                            "--steps", "3", "--warmup", "1", "--no-channels-last", "--augment", "none"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())  # rich wraps lines at the terminal width
    for text in ("machine:", "images/s", "training", "inference", "synthetic", "of peak", "matrix product",
                 "3 x forward", "data (fetch", "forward", "backward", "optimizer", "contiguous"):
        assert text in out, text


@pytest.mark.parametrize("args, message", [
    (["fastnt"], "Did you mean 'fastnet'"),
    (["fastnet", "--input", "3,abc"], "--input expects"),
    (["fastnet", "--data", "fashion_mnist"], "Did you mean 'fashion-mnist'"),
    (["fastnet", "--task", "clasify"], "Did you mean 'classify'"),
    (["fastnet", "--steps", "0"], "--steps must be"),
    (["fastnet", "--input", "3,16,24", "--data", "shapes"], "--data synthetic"),
])
def test_cli_errors(args, message):
    r = runner.invoke(app, ["bench", *args])
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
