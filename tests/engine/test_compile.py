"""`--compile`: training through torch.compile gives the eager loop's weights and a clean checkpoint."""
import csv

import pytest
import torch

import cnnkit
from cnnkit.engine import checkpoint as ck

quiet = dict(log=lambda *a, **k: None)


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile is not available")
def test_compiled_training_matches_eager(tiny):
    # fp32, no augmentation and a model without dropout (inductor draws dropout masks from its own
    # generator, so they differ from eager ones): the two runs differ only in the generated kernels
    opts = dict(tiny, model="fastnet", epochs=1, num_train=128, batch_size=64, amp="off", augment="none",
                tta=False, channels_last=False)
    eager = cnnkit.train(**dict(opts, name="eager"), **quiet)
    compiled = cnnkit.train(**dict(opts, name="compiled", compile=True), **quiet)
    a = ck.load_weights(ck.resolve_checkpoint(eager.run_dir, prefer="last"))
    b = ck.load_weights(ck.resolve_checkpoint(compiled.run_dir, prefer="last"))
    # the checkpoint holds the plain module's names (no `_orig_mod.` prefix), so eval/export read it as usual
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # the per-epoch figures agree too
    rows = [list(csv.DictReader(open(r.run_dir / "metrics.csv")))[0] for r in (eager, compiled)]
    assert float(rows[1]["train_loss"]) == pytest.approx(float(rows[0]["train_loss"]), rel=1e-4)
    assert rows[1]["val_acc"] == rows[0]["val_acc"]
    res = cnnkit.evaluate(str(compiled.run_dir), device="cpu")
    assert 0.0 <= res["acc"] <= 1.0
