"""The segmentation task: its losses against PyTorch's own, its metrics against torchmetrics, and the
ignore index everywhere."""
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore

from cnnkit.registry import CnnkitError
from cnnkit.tasks import create_task
from cnnkit.tasks.segment import IGNORE, ce_loss, dice_loss, focal_loss, per_image_miou

CLASSES = ["background", "a", "b", "c"]


def batch(seed=0, b=3, k=4, h=9, w=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g) * 2
    target = torch.randint(0, k, (b, h, w), generator=g).to(torch.uint8)
    target[0, :2] = IGNORE
    return logits, target


def test_ce_ignores_the_ignore_index_and_equals_pytorch():
    logits, t = batch()
    ref = F.cross_entropy(logits, t.long(), ignore_index=IGNORE)
    assert torch.allclose(ce_loss(logits, t), ref)
    t2 = t.clone()
    t2[t == IGNORE] = 1  # what the ignored pixels hold must not matter
    mask = t != IGNORE
    ref2 = F.cross_entropy(logits.permute(0, 2, 3, 1)[mask], t2[mask].long())
    assert torch.allclose(ce_loss(logits, t), ref2, atol=1e-6)


def test_dice_loss_by_hand():
    logits, t = batch(1)
    valid = t != IGNORE
    p = logits.softmax(1)
    dices = []
    for c in range(4):
        pc, tc = p[:, c][valid], (t[valid] == c).float()
        if tc.sum() > 0:
            dices.append((2 * (pc * tc).sum() + 1e-5) / (pc.sum() + tc.sum() + 1e-5))
    assert torch.allclose(dice_loss(logits, t), 1 - torch.stack(dices).mean(), atol=1e-6)
    # a perfect prediction has (almost) no loss
    perfect = F.one_hot(torch.where(valid, t.long(), 0), 4).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, t) < 1e-4


def test_focal_with_gamma_0_is_cross_entropy_and_down_weights_easy_pixels():
    logits, t = batch(2)
    assert torch.allclose(focal_loss(logits, t, 0.0), ce_loss(logits, t), atol=1e-6)
    assert focal_loss(logits, t, 2.0) < ce_loss(logits, t)


def test_streaming_metrics_equal_torchmetrics_over_the_whole_split():
    task = create_task("segment", CLASSES)
    ev = task.evaluator("cpu")
    miou = MulticlassJaccardIndex(4, average=None, ignore_index=IGNORE)
    acc = MulticlassAccuracy(4, average="micro", ignore_index=IGNORE)
    dice = DiceScore(4, average="none", input_format="index", include_background=True)
    kept_p, kept_t = [], []
    for seed in range(3):
        logits, t = batch(seed)
        ev.update(logits, t)
        pred = logits.argmax(1)
        miou.update(pred, t.long())
        acc.update(pred, t.long())
        keep = t != IGNORE  # DiceScore has no ignore index, and averages per sample: give it the
        kept_p.append(pred[keep])  # split's labelled pixels as one sample
        kept_t.append(t.long()[keep])
    dice.update(torch.cat(kept_p)[None, :, None], torch.cat(kept_t)[None, :, None])
    r = ev.compute()
    ref_iou = miou.compute()
    assert abs(r["miou"] - float(ref_iou.mean())) < 1e-6
    assert torch.allclose(torch.tensor(list(r["iou_per_class"].values()), dtype=torch.float32), ref_iou, atol=1e-6)
    assert abs(r["pixel_acc"] - float(acc.compute())) < 1e-6
    assert abs(r["dice"] - float(dice.compute().mean())) < 1e-5
    assert len(r["image_iou"]) == 9


def test_per_image_miou_counts_the_classes_of_each_image():
    t = torch.zeros(2, 4, 4, dtype=torch.uint8)
    t[:, :2] = 1
    pred = t.long().clone()
    pred[1, 0, 0] = 0  # one pixel of class 1 called background
    iou = per_image_miou(pred, t, 3)
    assert iou[0] == 1.0
    assert torch.isclose(iou[1], torch.tensor((8 / 9 + 7 / 8) / 2))


def test_options_are_checked():
    with pytest.raises(CnnkitError, match="dice"):
        create_task("segment", CLASSES, loss="dise")
    with pytest.raises(CnnkitError, match="focal_gamma"):
        create_task("segment", CLASSES, focal_gama=1.0)
    with pytest.raises(CnnkitError, match="at least 2 classes"):
        create_task("segment", ["background"])


def test_train_step_adds_the_aux_loss_with_the_models_weight():
    task = create_task("segment", CLASSES, model_cfg=dict(aux_loss_weight=0.25))
    logits, t = batch(3)
    aux = torch.randn_like(logits)
    loss, stats = task.train_step(lambda x: (logits, aux), None, t)
    assert torch.allclose(loss, ce_loss(logits, t) + 0.25 * ce_loss(aux, t))
    with pytest.raises(CnnkitError, match="at the mask's size"):
        task.train_step(lambda x: logits[..., :5], None, t)
    with pytest.raises(CnnkitError, match="gives 4 class maps but the data has 3"):
        create_task("segment", CLASSES[:3]).train_step(lambda x: logits, None, t)
