"""Segmentation of volumes by a plan (the guide's §6.5, nnU-Net): `cnnkit plan DATA`, then
`cnnkit train --plan plan.yaml`.

The plan (`cnnkit/plan/`, a YAML with the reason for each decision) fixes everything here; it
travels in `task_args: {plan: {...}}`, so config.yaml and the checkpoint's meta.json hold it.

- Data (`load_data`): the plan's data set (`data/volumes.py`: shapes-volumes, an nnU-Net raw
  folder), its cases split into train / validation (a held-out fraction, `val`), each case
  preprocessed by the plan (resampled to the target spacing, normalised: CT clip + z-score or
  per-image z-score). Training draws patches (`data/patches.py`: a third of them centred on
  foreground); validation takes each case whole.
- Model: `plan_unet` (`models/segment/nnunet.py`) with the plan's stages, strides and kernels.
- Loss: Dice (foreground classes, over the batch) + cross-entropy, on every deep-supervision
  output against the label downsampled to its size (nearest), weighted 1, 1/2, 1/4, ...
  normalised to sum to 1.
- Inference (`forward_eval`): a sliding window over the whole case, windows of the patch size
  overlapping by half, each window's logits weighted by a Gaussian (sigma = patch / 8) so that
  window centres count more than their borders; `tta` adds mirroring along every axis.
- Metrics: the prediction is taken back to the case's original grid (undoing the crop and the
  resampling) and compared with the original label there, as nnU-Net reports. `val_dice`, the
  monitor, is the mean over the foreground classes of Dice = 2 TP / (2 TP + FP + FN) summed over
  the cases; `val_case_dice` the mean over cases of each case's foreground Dice (classes absent
  from both label and prediction left out); `val_iou` the same as `val_dice` for IoU;
  `val_loss` the cross-entropy on the preprocessed grid.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import CnnkitError, register_task, suggest
from .base import Evaluator, MetricSpec, Task
from .segment import IGNORE, ce_loss, class_rows, dice_loss, scores_from_confusion

STEP = 0.5          # sliding-window step, in patch sizes
SIGMA = 1 / 8       # Gaussian importance: sigma per axis, in patch sizes
PATCHES_PER_EPOCH = 160


# ------------------------------------------------------------------ sliding window


def gaussian_importance(patch: tuple[int, ...], sigma_scale: float = SIGMA, device="cpu") -> torch.Tensor:
    """A patch-sized weight map: a Gaussian with sigma = sigma_scale * patch per axis, peak 1, and no
    zeros (the smallest value is kept at the smallest non-zero one), so every voxel gets some weight."""
    axes = []
    for p in patch:
        c = (p - 1) / 2
        s = max(p * sigma_scale, 1e-3)
        axes.append(torch.exp(-((torch.arange(p, device=device, dtype=torch.float32) - c) ** 2) / (2 * s * s)))
    w = axes[0]
    for a in axes[1:]:
        w = w[..., None] * a
    w = w / w.max()
    return w.clamp(min=float(w[w > 0].min()))


def window_starts(size: int, patch: int, step: float = STEP) -> list[int]:
    """Starts of windows of `patch` covering 0..size with about `step * patch` between them."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * step)) + 1
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


@torch.no_grad()
def sliding_window(model, x: torch.Tensor, patch: tuple[int, ...], num_classes: int, step: float = STEP,
                   gaussian: bool = True, mirror: bool = False) -> torch.Tensor:
    """Logits (1, K, *S) for one case x (1, C, *S): windows of `patch`, Gaussian-weighted, averaged.
    A case smaller than the patch is padded with 0 and cropped back."""
    size = x.shape[2:]
    pad = [max(0, p - n) for n, p in zip(size, patch)]
    if any(pad):
        x = F.pad(x, [q for p in reversed(pad) for q in (p // 2, p - p // 2)])
    full = x.shape[2:]
    w = gaussian_importance(patch, device=x.device) if gaussian else torch.ones(patch, device=x.device)
    out = torch.zeros((1, num_classes, *full), device=x.device)
    weight = torch.zeros(full, device=x.device)
    starts = [window_starts(n, p, step) for n, p in zip(full, patch)]
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(patch)):
        sl = tuple(slice(int(c), int(c) + p) for c, p in zip(corner, patch))
        win = x[(slice(None), slice(None), *sl)]
        logits = model(win).float()
        if mirror:
            axes = list(range(2, win.ndim))
            n = 1
            for r in range(1, len(axes) + 1):
                for combo in _combinations(axes, r):
                    logits = logits + model(win.flip(combo)).float().flip(combo)
                    n += 1
            logits = logits / n
        out[(slice(None), slice(None), *sl)] += logits * w
        weight[sl] += w
    out = out / weight
    crop = tuple(slice(p // 2, p // 2 + n) for p, n in zip(pad, size))
    return out[(slice(None), slice(None), *crop)]


def _combinations(items, r):
    from itertools import combinations

    return [list(c) for c in combinations(items, r)]


# ------------------------------------------------------------------ metrics


def _confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    valid = target != IGNORE
    idx = target[valid].long() * k + pred[valid].long()
    return torch.bincount(idx, minlength=k * k).view(k, k)


def case_foreground_dice(cm: torch.Tensor) -> float:
    """One case's mean Dice over the foreground classes in its label or prediction (1 if none is)."""
    cm = cm.double()
    tp = cm.diag()[1:]
    fn, fp = cm.sum(1)[1:] - tp, cm.sum(0)[1:] - tp
    occurs = (tp + fn + fp) > 0
    if not bool(occurs.any()):
        return 1.0
    return float((2 * tp / (2 * tp + fp + fn).clamp(min=1))[occurs].mean())


class VolumeEvaluator(Evaluator):
    """Per case: cross-entropy on the preprocessed grid, then the prediction restored to the original grid
    and counted in a K x K confusion matrix there (summed over cases and ranks)."""

    def __init__(self, task: "VolumeTask", device):
        self.task, self.k, self.device = task, task.num_classes, device
        self.cm = torch.zeros(self.k, self.k, dtype=torch.long, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0
        self.case_dice: list[float] = []
        self.names: list[str] = []

    def update(self, logits: torch.Tensor, case) -> None:
        from ..data.volumes import restore

        logits = logits.float()
        label = torch.from_numpy(np.asarray(case.label)).to(logits.device)[None]
        self.loss += ce_loss(logits, label, reduction="sum").double()
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        if case.before is not None:
            pred = restore(pred, case.before, case.after)
            truth = case.before.label
        else:
            truth = case.label
        cm = _confusion(torch.from_numpy(np.ascontiguousarray(pred)), torch.from_numpy(np.asarray(truth)), self.k)
        self.cm += cm.to(self.cm.device)
        self.case_dice.append(case_foreground_dice(cm))
        self.names.append(case.name)
        self.n += 1

    def compute(self, dd=None) -> dict:
        loss, n = dd.sum(self.loss, self.n) if dd is not None else (float(self.loss), self.n)
        cm = self.cm
        case_dice = torch.tensor(self.case_dice, dtype=torch.float64)
        if dd is not None and dd.enabled:
            cm = dd.reduce_tensor(cm)
            case_dice = dd.gather_rows(case_dice.to(self.device)).cpu()
        s = scores_from_confusion(cm)
        fg_dice, fg_iou = s["dice_per_class"][1:], s["iou"][1:]
        ok = ~torch.isnan(fg_dice)
        return dict(loss=loss / max(n, 1), dice=float(fg_dice[ok].mean()) if ok.any() else 0.0,
                    iou=float(fg_iou[ok].mean()) if ok.any() else 0.0,
                    case_dice=float(case_dice.mean()) if len(case_dice) else 0.0,
                    dice_per_class={c: float(v) for c, v in zip(self.task.classes, s["dice_per_class"].tolist())},
                    iou_per_class={c: float(v) for c, v in zip(self.task.classes, s["iou"].tolist())},
                    confusion=cm.cpu(), case_dice_each=case_dice, case_names=list(self.names))


# ------------------------------------------------------------------ the task


@register_task(name="volume")
class VolumeTask(Task):
    name = "volume"
    target_kind = "volume"
    monitor = "val_dice"
    metrics = (MetricSpec("loss", "loss", higher_is_better=False), MetricSpec("dice", "pct"),
               MetricSpec("case_dice", "pct"), MetricSpec("iou", "pct", bar=False))
    # nnU-Net's optimiser (SGD, Nesterov momentum 0.99, lr 0.01, poly decay, weight decay 3e-5). Its
    # 1000 epochs x 250 steps are a GPU's days; here 8 epochs x 80 steps of batch 2 (the default plan on
    # shapes-volumes: about 9 minutes on 2 CPU cores, foreground Dice 0.9+ from epoch 2). More for real data:
    # --epochs, --set task_args='{patches_per_epoch: 500}'.
    defaults = dict(optimizer="nesterov", momentum=0.99, lr=0.01, weight_decay=3e-5, schedule="poly",
                    warmup_epochs=0.0, epochs=8, label_smoothing=0.0, tta=False, grad_clip=12.0, amp="auto",
                    channels_last=False, ema=0.0, normalize="dataset", val=0.2, augment="plan")

    def __init__(self, classes, model_cfg: dict | None = None, plan: dict | None = None,
                 patches_per_epoch: int = PATCHES_PER_EPOCH, **options):
        options.pop("label_smoothing", None)
        if options:
            raise suggest(next(iter(options)), ["plan", "patches_per_epoch"], "volume task option (task_args)")
        if not plan:
            raise CnnkitError("the volume task trains from a plan: run `cnnkit plan DATA`, then "
                              "`cnnkit train --plan plan.yaml`")
        super().__init__(classes, model_cfg, plan=plan, patches_per_epoch=patches_per_epoch)
        self.plan = dict(plan)
        self.patch = tuple(int(p) for p in self.plan["patch_size"])
        self.dims = int(self.plan.get("dims", len(self.patch)))
        self.patches_per_epoch = int(patches_per_epoch)
        if self.num_classes < 2:
            raise CnnkitError(f"segmentation needs at least 2 classes (background and one more), got {self.classes}")

    # -- data
    @classmethod
    def load_data(cls, name: str, task_options: dict | None = None, log=print, seed: int = 0, val=0.2,
                  num_train: int | None = None, num_val: int | None = None, data_dir=None, **ignored):
        from ..data.volumes import load_volumes

        plan = (task_options or {}).get("plan")
        if not plan:
            raise CnnkitError("the volume task trains from a plan: run `cnnkit plan DATA`, then "
                              "`cnnkit train --plan plan.yaml`")
        per_epoch = int((task_options or {}).get("patches_per_epoch", PATCHES_PER_EPOCH))
        vs = load_volumes(name, data_dir=data_dir or plan.get("data_dir"), num_cases=plan.get("num_cases"),
                          seed=plan.get("seed", 0))
        return bundle_from_volumes(vs, plan, seed=seed, val=val, per_epoch=per_epoch, num_train=num_train,
                                   num_val=num_val, log=log)

    def model_kwargs(self, image_size=None) -> dict:
        p = self.plan
        return dict(num_classes=self.num_classes, dims=self.dims, strides=p["strides"], kernel_sizes=p["kernel_sizes"],
                    base_features=p.get("base_features", 32), max_features=p.get("max_features"),
                    deep_supervision=bool(p.get("deep_supervision", True)), patch_size=self.patch)

    # -- training
    def batch_augment(self, spec):
        from ..data.volume_augment import VolumeAugment

        if spec in ("none", "off"):
            return VolumeAugment({"none": True}, self.dims)
        if spec not in (None, "plan", "default"):
            raise CnnkitError(f"a planned run augments as its plan says (--augment plan) or not at all "
                              f"(--augment none), not {spec!r}: edit the plan's augmentation block instead")
        return VolumeAugment(self.plan.get("augmentation") or {}, self.dims)

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ce_loss(logits, target) + dice_loss(logits, target, include_background=False)

    def train_step(self, model, x, y):
        out = model(x)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if outs[0].shape[2:] != y.shape[1:] or outs[0].shape[1] != self.num_classes:
            raise CnnkitError(f"the model gives {tuple(outs[0].shape)} logits for labels {tuple(y.shape)} "
                              f"with {self.num_classes} classes")
        weights = [0.5 ** i for i in range(len(outs))]
        total = sum(weights)
        loss = 0.0
        for w, o in zip(weights, outs):
            t = y if o.shape[2:] == y.shape[1:] else downsample_label(y, o.shape[2:])
            loss = loss + (w / total) * self.criterion(o, t)
        return loss, {}

    def forward_eval(self, model, x, tta: bool = False):
        if self.dims == 2 and x.ndim == 5:  # a 2-D plan on a volume: slice by slice
            slices = [sliding_window(model, x[:, :, z], self.patch, self.num_classes, mirror=tta)
                      for z in range(x.shape[2])]
            return torch.stack(slices, 2)
        return sliding_window(model, x, self.patch, self.num_classes, mirror=tta)

    def evaluator(self, device) -> VolumeEvaluator:
        return VolumeEvaluator(self, device)

    def synthetic_targets(self, n: int, size, generator: torch.Generator):
        y = torch.zeros(n, *self.patch, dtype=torch.uint8)
        for i in range(n):
            c = [int(torch.randint(0, max(1, p // 2), (1,), generator=generator)) for p in self.patch]
            y[(i, *[slice(a, a + p // 2) for a, p in zip(c, self.patch)])] = 1
        return y

    # -- predictions
    def decode(self, logits: torch.Tensor, **options) -> list[dict]:
        pred = logits.float().argmax(1)
        out = []
        for m in pred:
            counts = torch.bincount(m.flatten(), minlength=self.num_classes)
            out.append(dict(mask=m.to(torch.uint8).cpu(),
                            voxels={self.classes[i]: int(v) for i, v in enumerate(counts.tolist()) if v}))
        return out

    def describe(self, pred: dict) -> list[str]:
        return [", ".join(f"{k} {v:,} voxels" for k, v in pred["voxels"].items())]

    def eval_summary(self, res: dict) -> dict:
        line = (f"loss {res['loss']:.4f}  foreground Dice {res['dice']:.2%}  per-case Dice {res['case_dice']:.2%}  "
                f"IoU {res['iou']:.2%}")
        rows = class_rows(self.classes, res["confusion"], res["dice_per_class"], res["iou_per_class"])
        cases = [(n, f"{float(d):.2%}") for n, d in zip(res["case_names"], res["case_dice_each"].tolist())]
        return dict(lines=[line], tables=[("per class (original grid)", ("class", "Dice", "IoU", "voxels"), rows),
                                          ("per case", ("case", "foreground Dice"), cases)])

    def report_sections(self) -> tuple:
        from ..report import volume as sections

        return sections.SECTIONS


def plan_options(path) -> dict:
    """`cnnkit train --plan PLAN`: the training options a plan stands for (the user's own options go over
    them). The whole plan travels in task_args, so config.yaml and meta.json keep it."""
    from ..plan import Plan

    plan = Plan.load(path).to_dict()
    name = str(plan["dataset"])
    return dict(model="plan_unet", task="volume", data=name, data_dir=plan.get("data_dir"),
                batch_size=int(plan["batch_size"]), task_args=dict(plan=plan),
                name=f"plan-{Path(name).name}")


def downsample_label(y: torch.Tensor, size) -> torch.Tensor:
    """A label map (B, *S) at a deep-supervision output's size, by nearest neighbour."""
    return F.interpolate(y[:, None].float(), size=tuple(size), mode="nearest")[:, 0].to(y.dtype)


def bundle_from_volumes(vs, plan: dict, seed: int = 0, val=0.2, per_epoch: int = PATCHES_PER_EPOCH,
                        num_train: int | None = None, num_val: int | None = None, log=print):
    """A DataBundle of preprocessed cases: patches for training, whole cases for validation."""
    from ..data.datasets import DataBundle
    from ..data.patches import CaseSplit, PatchSplit, PreparedCase, foreground_positions
    from ..data.volumes import preprocess, split_cases
    from ..plan import Plan

    planned = Plan.from_dict(plan, "the run's plan")  # checked again: task_args may have been edited
    frac = 0.2 if val in (None, "test") else float(val)
    train_cases, val_cases = split_cases(vs, val=frac, seed=seed)
    if num_train:
        train_cases = train_cases[:num_train]
    if num_val:
        val_cases = val_cases[:num_val]
    if not train_cases or not val_cases:
        raise CnnkitError(f"{vs.name} has {len(vs.cases)} cases: too few for a training and a validation split")
    k = len(vs.classes)
    patch = tuple(int(p) for p in plan["patch_size"])

    def prepared(case, keep: bool):
        after = preprocess(case, planned)
        label = after.label if after.label is not None else np.zeros(after.image.shape[1:], np.uint8)
        return PreparedCase(case.name, np.ascontiguousarray(after.image, dtype=np.float32),
                            np.ascontiguousarray(label), foreground_positions(label, k, seed),
                            before=case if keep else None, after=after if keep else None)

    train = [prepared(c, False) for c in train_cases]
    valid = [prepared(c, True) for c in val_cases]
    channels = train[0].image.shape[0]
    log(f"{vs.name}: {len(train)} training and {len(valid)} validation cases, preprocessed to spacing "
        f"{tuple(plan.get('target_spacing', ()))}; patches {'x'.join(map(str, patch))}")
    oversample = float(plan.get("foreground_oversample", 1 / 3))
    return DataBundle(name=vs.name, train=PatchSplit(train, patch, per_epoch, oversample), val=CaseSplit(valid),
                   classes=list(vs.classes), mean=(0.0,) * channels, std=(1.0,) * channels, in_chans=channels,
                   image_size=max(patch), val_name="holdout", source=vs.source, input_kind="volume",
                   input_shape=(channels, *patch), unit="cases")


__all__ = ["VolumeTask", "sliding_window", "gaussian_importance", "window_starts", "case_foreground_dice"]
