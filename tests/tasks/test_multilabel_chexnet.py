"""The multilabel task as CheXNet trains it: the weighted BCE (by hand and against torch's pos_weight),
its weights as task state, the uncertain-label policies in the loss, the binned ROC / AUROC, and one
tiny end-to-end run on the shapes scenes with its report sections."""
import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.data.multilabel import IGNORE, UNCERTAIN
from cnnkit.registry import CnnkitError
from cnnkit.tasks import create_task
from cnnkit.tasks.multilabel import label_weights

TINY = dict(growth_rate=8, block_config=[1, 1, 1, 1], num_init_features=16)


def _task(**options):
    return create_task("multilabel", ["a", "b", "c"], **options)


def test_weights_are_the_papers_label_frequencies():
    train = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, IGNORE]], dtype=torch.uint8)
    w = label_weights(train, 3)
    # label a: |P| = 3, |N| = 1 -> w+ = 1/4, w- = 3/4; b: 1 and 3; c: 0 and 3 (one entry ignored)
    assert w.tolist() == [[0.25, 0.75], [0.75, 0.25], [1.0, 0.0]]
    assert label_weights(torch.full((2, 3), IGNORE, dtype=torch.uint8), 3).tolist() == [[0.5, 0.5]] * 3
    torch.testing.assert_close(label_weights(torch.tensor([0, 0, 2]), 3),  # class indices: sets of one label
                               torch.tensor([[1 / 3, 2 / 3], [1.0, 0.0], [2 / 3, 1 / 3]]))


def test_weighted_bce_by_hand_and_against_pos_weight():
    task = _task(loss="weighted_bce")
    train = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.uint8)
    task.prepare(train)
    wp, wn = task.weights[:, 0], task.weights[:, 1]
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.7, -2.0]])
    target = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.uint8)
    got = task.criterion(logits, target)
    by_hand = 0.0
    for i in range(2):
        for j in range(3):
            p = 1 / (1 + math.exp(-float(logits[i, j])))
            y = float(target[i, j])
            by_hand -= float(wp[j]) * y * math.log(p) + float(wn[j]) * (1 - y) * math.log(1 - p)
    assert float(got) == pytest.approx(by_hand / 6, rel=1e-6)
    # w- * BCEWithLogits(pos_weight = w+ / w-) is the same loss (all w- > 0 here)
    torch_loss = F.binary_cross_entropy_with_logits(logits, target.float(), weight=wn, pos_weight=wp / wn)
    torch.testing.assert_close(got, torch_loss)
    # plain BCE is torch's, unchanged
    plain = F.binary_cross_entropy_with_logits(logits, target.float())
    torch.testing.assert_close(_task().criterion(logits, target), plain)


def test_uncertain_policies_in_the_loss():
    logits = torch.tensor([[1.5, -0.5, 0.3]])
    target = torch.tensor([[1, UNCERTAIN, IGNORE]], dtype=torch.uint8)
    ones, zeros, ignore = (_task(uncertain=u).criterion(logits, target) for u in ("ones", "zeros", "ignore"))
    bce = lambda t: F.binary_cross_entropy_with_logits(logits[:, :2], torch.tensor([t]))  # noqa: E731
    torch.testing.assert_close(ones, bce([1.0, 1.0]))  # the ignored entry never counts
    torch.testing.assert_close(zeros, bce([1.0, 0.0]))
    torch.testing.assert_close(ignore, F.binary_cross_entropy_with_logits(logits[:, :1], torch.ones(1, 1)))
    w = label_weights(torch.tensor([[1, UNCERTAIN, 0], [0, UNCERTAIN, 0]], dtype=torch.uint8), 3, "zeros")
    assert w[1].tolist() == [1.0, 0.0]  # U-Zeros: the uncertain entries are negatives when counting too


def test_weights_are_task_state_and_travel_in_meta():
    task = _task(loss="weighted_bce")
    task.prepare(torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.uint8))
    meta = task.meta()
    again = create_task("multilabel", ["a", "b", "c"], **json.loads(json.dumps(meta["task_options"])))
    assert torch.equal(again.weights, task.weights) and again.loss_name == "weighted_bce"
    again.prepare(torch.tensor([[1, 1, 1]], dtype=torch.uint8))  # given weights stay
    assert torch.equal(again.weights, task.weights)
    fresh = _task(loss="weighted_bce")
    fresh.load_state_dict(task.state_dict())
    assert torch.equal(fresh.weights, task.weights)
    # chexnet names the weighted loss as its own default; other models get plain BCE
    assert create_task("multilabel", ["a"], {"loss": "weighted_bce"}).loss_name == "weighted_bce"
    assert _task().loss_name == "bce" and _task().state_dict() == {}


def test_option_errors_name_the_closest():
    with pytest.raises(CnnkitError, match=r"unknown multilabel loss 'weighted_bc'. Did you mean 'weighted_bce'"):
        _task(loss="weighted_bc")
    with pytest.raises(CnnkitError, match=r"unknown uncertain-label policy 'one'. Did you mean 'ones'"):
        _task(uncertain="one")
    with pytest.raises(CnnkitError, match=r"unknown multilabel task option .*'lss'"):
        _task(lss="bce")
    with pytest.raises(CnnkitError, match=r"label_weights must be 3 pairs"):
        _task(loss="weighted_bce", label_weights=[[0.5, 0.5]])


def test_binned_roc_gives_torchmetrics_auroc_and_skips_ignored_and_one_sided_labels():
    from torchmetrics.functional.classification import multilabel_auroc, multilabel_roc

    torch.manual_seed(0)
    logits = torch.randn(120, 3)
    target = (torch.rand(120, 3) > 0.6).to(torch.uint8)
    target[::7, 1] = IGNORE
    ev = _task().evaluator("cpu")
    for a in range(0, 120, 40):
        ev.update(logits[a:a + 40], target[a:a + 40])
    res = ev.compute()
    want = multilabel_auroc(torch.sigmoid(logits), target.long(), num_labels=3, average=None, thresholds=200,
                            ignore_index=IGNORE)
    torch.testing.assert_close(res["auroc_per_label"], want)
    fpr, tpr, _ = multilabel_roc(torch.sigmoid(logits), target.long(), num_labels=3, thresholds=200,
                                 ignore_index=IGNORE)
    torch.testing.assert_close(res["roc_fpr"], fpr)
    torch.testing.assert_close(res["roc_tpr"], tpr)
    assert res["targets"].shape == (120, 3) and int(res["positives"][1]) == int((target[:, 1] == 1).sum())
    target[:, 2] = 0  # no positives: no AUROC, and the mean is over the other labels
    ev = _task().evaluator("cpu")
    ev.update(logits, target)
    res = ev.compute()
    assert math.isnan(res["auroc_per_label"][2])
    assert res["auroc"] == pytest.approx(float(res["auroc_per_label"][:2].mean()))


def test_tiny_chexnet_on_shapes_end_to_end(tmp_path):
    from cnnkit.report.classify import MULTILABEL_SECTIONS
    from cnnkit.report.html import _Run

    res = cnnkit.train(model="chexnet", model_args=TINY, data="shapes", epochs=1, num_train=48, num_val=24,
                       batch_size=16, optimizer="adam", lr=1e-3, amp="off", project=str(tmp_path), quiet=True,
                       report=False, log=lambda *a: None)
    rows = list(csv.DictReader(open(res.run_dir / "metrics.csv")))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_auroc"]) <= 1.0 and res.monitor == "val_auroc"
    meta = json.loads((res.run_dir / "best" / "meta.json").read_text())
    assert meta["task"] == "multilabel" and meta["task_options"]["loss"] == "weighted_bce"
    assert len(meta["task_options"]["label_weights"]) == 8  # one (w+, w-) pair per shape class
    ev = cnnkit.evaluate(str(res.run_dir))  # eval rebuilds the task, weights included: the same numbers
    assert ev["auroc"] == pytest.approx(float(rows[0]["val_auroc"]), abs=1e-6)
    assert ev["loss"] == pytest.approx(float(rows[0]["val_loss"]), rel=1e-5)
    run = _Run(res.run_dir, "cpu", max_images=4)
    for sid, title, build in MULTILABEL_SECTIONS:
        html = build(run)
        assert "not available" not in html, sid
    assert "data:image/png" in MULTILABEL_SECTIONS[1][2](run)  # the ROC figure
    cams = MULTILABEL_SECTIONS[2][2](run)
    assert cams.count("Grad-CAM of ") >= 4 and "image " in cams
