"""DDP under torchrun: two CPU processes (gloo) train to the weights one process gets.

The oracle is a single-process run of the same config. What makes the two agree to float
rounding, and what this test therefore fixes:
- the same global batch and seed; each rank computes half of every batch;
- augmentation is drawn for the whole global batch and each rank keeps its rows (data/loader.py),
  so even CutMix/MixUp partners match ("strong" below);
- dropout masks are drawn per rank (they cannot match one process): dropout is off;
- BatchNorm statistics over the global batch: sync_bn (CpuSyncBatchNorm on gloo), or a BN-free model;
- fp32, contiguous layout: PyTorch's CPU fp32 BatchNorm in channels_last accumulates in a way
  that is off by ~1e-4 against float64 in one step (CpuSyncBatchNorm is not), and seed_cnn's
  global average pool keeps gradients continuous (a global max pool turns 1e-7 into 1e-3 by
  switching which position wins).
A negative control shows the comparison sees the sharding: without sync_bn the weights differ.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import cnnkit
from cnnkit.config import FIELD_NAMES
from cnnkit.data.loader import StreamLoader, TensorLoader, shard
from cnnkit.engine import checkpoint as ck
from cnnkit.engine.distributed import Distributed, is_main
from cnnkit.registry import CnnkitError

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

quiet = dict(log=lambda *a, **k: None)
BASE = dict(data="shapes", num_train=256, num_val=64, image_size=16, batch_size=64, amp="off", device="cpu",
            channels_last=False, quiet=True, **({"report": False} if "report" in FIELD_NAMES else {}))
# BatchNorm + global average pool, CutMix/MixUp across the ranks' halves, EMA, SyncBatchNorm, 2 epochs of 4 steps
# (the default onecycle schedule: a constant lr 0.2 from the first step amplifies rounding to ~1e-3 in 8 steps,
# in one process as much as in two)
MAIN = dict(BASE, model="seed_cnn", model_args={"drop_rate": 0.0}, augment="strong", ema=0.9, sync_bn=True, epochs=2)
BN_FREE = dict(BASE, model="lenet5_modern", channels=1, image_size=32, augment="strong", optimizer="adam", lr=1e-3,
               epochs=1)
ATOL = 1e-5


def _torchrun(args: list, cwd, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _max_diff(run_a, run_b, which: str = "last") -> float:
    a = ck.load_weights(ck.resolve_checkpoint(run_a, prefer=which))
    b = ck.load_weights(ck.resolve_checkpoint(run_b, prefer=which))
    assert a.keys() == b.keys()  # in particular no "module." prefixes from the DDP wrapper
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _rows(run) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv")))


def _same_metrics(run_a, run_b) -> None:
    ra, rb = _rows(run_a), _rows(run_b)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
    for x, y in zip(ra, rb):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(x[k]) == pytest.approx(float(y[k]), abs=ATOL), (k, x, y)


def test_two_processes_train_like_one(tmp_path):
    """`torchrun --nproc_per_node 2 -m cnnkit train`, then through the API under torchrun: a run stopped
    after epoch 1 and resumed, a BN-free model, and the control without sync_bn."""
    project = tmp_path / "runs"
    # 1. the command line, as a user runs it
    cli = ["-m", "cnnkit", "train", "--data", "shapes", "--set", "num_train=256", "--set", "num_val=64",
           "--image-size", "16", "--batch-size", "64", "--epochs", "2", "--amp", "off",
           "--device", "cpu", "--model", "seed_cnn", "--set", "model_args={drop_rate: 0.0}", "--augment", "strong",
           "--ema", "0.9", "--set", "sync_bn=true", "--set", "channels_last=false", "--project", project,
           "--name", "two", "--quiet"]
    if "report" in FIELD_NAMES:
        cli += ["--set", "report=false"]
    r = _torchrun(cli, tmp_path)
    assert r.stdout.count("cpu x2 (DDP, 32 images per process and step)") == 1  # rank 1 logs nothing
    assert r.stdout.count("epoch 2 |") == 1
    # 2. the API under torchrun; each train() joins a new process group and leaves it
    script = tmp_path / "ddp_api.py"
    script.write_text(textwrap.dedent(f"""
        import cnnkit
        main, bn_free, project = {MAIN!r}, {BN_FREE!r}, {str(project)!r}
        quiet = lambda *a, **k: None
        part = cnnkit.train(**main, project=project, name="part", stop_after=1, log=quiet)
        cnnkit.train(resume=str(part.run_dir), log=quiet)
        cnnkit.train(**bn_free, project=project, name="bn_free_two", log=quiet)
        cnnkit.train(**dict(main, sync_bn=False), project=project, name="no_sync_bn", log=quiet)
    """))
    _torchrun([script], tmp_path)

    one = cnnkit.train(**MAIN, project=str(project), name="one", **quiet).run_dir
    bn_free_one = cnnkit.train(**BN_FREE, project=str(project), name="bn_free_one", **quiet).run_dir
    # only rank 0 made folders, each once (a second writer would have made "two-2")
    assert sorted(p.name for p in project.iterdir()) == ["bn_free_one", "bn_free_two", "no_sync_bn", "one", "part",
                                                          "two"]
    two, part = project / "two", project / "part"
    for f in ("config.yaml", "metrics.csv", "curves.png", "best/weights.safetensors", "last/state.json"):
        assert (two / f).is_file(), f
    assert not list(two.glob(".*tmp*"))

    # same weights and numbers as one process: BatchNorm with sync_bn ...
    assert _max_diff(one, two, "last") < ATOL
    assert _max_diff(one, two, "best") < ATOL
    assert ck.load_meta(two / "best")["epoch"] == ck.load_meta(one / "best")["epoch"]
    _same_metrics(one, two)
    # ... also when a DDP run stopped after epoch 1 and was resumed under DDP ...
    assert ck.load_meta(part / "last")["epoch"] == 2
    assert _max_diff(one, part, "last") < ATOL
    _same_metrics(one, part)
    # ... and a model without BatchNorm, no sync_bn needed
    assert _max_diff(bn_free_one, project / "bn_free_two") < ATOL
    _same_metrics(bn_free_one, project / "bn_free_two")
    # control: per-rank BN statistics (no sync_bn) do not give one process's weights
    assert _max_diff(one, project / "no_sync_bn") > 1e-3


def test_shard_splits_global_batches_and_eval_blocks():
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, 8, True, r, 2) for r in range(2)]
    for i in range(2):  # step i of both ranks together is global batch i, rank 0 first
        assert torch.equal(torch.cat([p[i * 4:(i + 1) * 4] for p in parts]), order[i * 8:(i + 1) * 8])
    blocks = [shard(torch.arange(11), 4, False, r, 3) for r in range(3)]
    assert [len(b) for b in blocks] == [4, 4, 3] and torch.equal(torch.cat(blocks), torch.arange(11))
    assert shard(order, 8, True, 0, 1) is order


def test_tensor_loader_under_ddp():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    targets = torch.arange(10)
    single = TensorLoader(images, targets, 4, shuffle=True, drop_last=True, seed=3)
    ranks = [TensorLoader(images, targets, 4, shuffle=True, drop_last=True, seed=3, rank=r, world_size=2)
             for r in range(2)]
    assert len(single) == len(ranks[0]) == 2
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert torch.equal(y, y0) and torch.equal(y, y1)  # every rank gets the whole global batch ...
        (_, l0), (_, l1) = ranks[0].local(x0, y0), ranks[1].local(x1, y1)
        assert torch.equal(torch.cat([l0, l1]), y)  # ... and keeps its half
    evals = [TensorLoader(images, targets, 4, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([y for _, y in ev]) for ev in evals]
    assert torch.equal(torch.cat(seen), targets) and len(evals[0]) == 3  # 5 images in batches of 2
    # a streamed data set decodes only this rank's rows: the same rows the in-memory loader keeps
    dataset = [(images[i], int(targets[i])) for i in range(10)]
    for r in range(2):
        stream = StreamLoader(dataset, 4, shuffle=True, drop_last=True, seed=3, workers=0, rank=r, world_size=2)
        assert len(stream) == 2
        kept = [ranks[r].local(x, y)[1] for x, y in ranks[r]]
        for (x, y), want in zip(stream, kept, strict=True):
            assert torch.equal(y, want) and x.shape == (2, 1, 2, 2)


def test_single_process_helpers_are_identities(monkeypatch):
    dd = Distributed()
    assert not dd.enabled and dd.is_main
    m = torch.nn.BatchNorm2d(2)
    assert dd.wrap(m) is m and dd.sync_batchnorm(m) is m
    t = torch.arange(3.0)
    assert dd.gather_rows(t) is t and dd.broadcast("runs/x") == "runs/x"
    assert dd.sum(torch.tensor(2.5), torch.tensor(3), 4) == [2.5, 3, 4]
    assert dd.check_batch(64) == 64
    monkeypatch.setenv("RANK", "1")
    assert not is_main()


def test_global_batch_must_split_evenly():
    assert Distributed(world_size=4).check_batch(64) == 16
    with pytest.raises(CnnkitError, match="split evenly over 3 processes: use 63 or 66"):
        Distributed(world_size=3).check_batch(64)
