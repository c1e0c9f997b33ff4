"""Object detection (the guide's §6.2): boxes and classes per object, and masks for instance models.

- Targets: `data.targets.ObjectTargets` (boxes xyxy in pixels, labels 0..K-1, optional masks).
- Augmentation: `data.object_augment.ObjectAugment` (flip, zoom + shift, colour), boxes and masks
  moved with the pixels.
- Training: every detector computes its losses in `forward(images, targets)` (the interface of
  `models/detect/_base.py`); the loss is their sum and each part is a progress-bar stat.
- Evaluation: COCO mAP@[.5:.95], mAP50, mAP75 and per-class AP from torchmetrics'
  MeanAveragePrecision (faster-coco-eval backend where installed, else pycocotools), and mask mAP
  for instance models. metrics.csv: `val_map` (the monitor), `val_map50`, `val_map75`, `val_mar100`
  and, for Mask R-CNN, `val_mask_map` and `val_mask_map50`.
- Predict: boxes above `conf` drawn with torchvision's draw_bounding_boxes (and masks with
  draw_segmentation_masks) into one PNG per image, and COCO results JSON.
- Export: one-stage detectors (`default_cfg["export"]`) export every candidate (boxes, scores)
  before NMS; the check compares the decoded detections of PyTorch and the runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..registry import CnnkitError, register_task
from .base import Evaluator, ExportSpec, MetricSpec, Task

MASK_THRESHOLD = 0.5


def _backend() -> str:
    try:
        import faster_coco_eval  # noqa: F401

        return "faster_coco_eval"
    except ImportError:
        return "pycocotools"


class DetectionEvaluator(Evaluator):
    """torchmetrics' COCO evaluation. It keeps the split's detections (at most `detections_per_img` per
    image, as COCO evaluation must), never the network's raw outputs; under DDP torchmetrics gathers
    them across the ranks in `compute`."""

    def __init__(self, task: "DetectionTask", device):
        from torchmetrics.detection import MeanAveragePrecision

        self.task = task
        iou = ("bbox", "segm") if task.masks else "bbox"
        self.metric = MeanAveragePrecision(iou_type=iou, class_metrics=True, backend=_backend(),
                                           extended_summary=True)  # + the precision arrays: PR curves
        self.images = 0
        self.per_image: list[dict] = []  # small per-image summaries for the report's galleries

    def update(self, outputs: list[dict], targets) -> None:
        gts = targets.per_image()
        preds = []
        for o in outputs:
            p = dict(boxes=o["boxes"].float().cpu(), scores=o["scores"].float().cpu(), labels=o["labels"].cpu())
            if self.task.masks:
                p["masks"] = (o["masks"] > MASK_THRESHOLD).cpu() if "masks" in o else torch.zeros(
                    (0, *targets.masks.shape[-2:]), dtype=torch.bool)
            preds.append(p)
        gt = []
        for t in gts:
            d = dict(boxes=t["boxes"].float().cpu(), labels=t["labels"].cpu())
            if self.task.masks:
                d["masks"] = t["masks"].bool().cpu()
            gt.append(d)
        self.metric.update(preds, gt)
        for p, t in zip(preds, gt):
            self.per_image.append(dict(f1=_f1_at_50(p, t), n_gt=len(t["labels"])))
        self.images += len(outputs)

    def compute(self, dd=None) -> dict:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics warns about the many detections COCO needs
            r = self.metric.compute()
        bbox = "bbox_" if self.task.masks else ""
        get = lambda k: float(r[f"{bbox}{k}"]) if f"{bbox}{k}" in r else float(r[k])  # noqa: E731
        out = dict(map=get("map"), map50=get("map_50"), map75=get("map_75"), mar100=get("mar_100"),
                   map_small=get("map_small"), map_medium=get("map_medium"), map_large=get("map_large"),
                   mar1=get("mar_1"), mar10=get("mar_10"))
        if self.task.masks:
            out.update(mask_map=float(r["segm_map"]), mask_map50=float(r["segm_map_50"]),
                       mask_map75=float(r["segm_map_75"]))
        per_class = r.get(f"{bbox}map_per_class", r.get("map_per_class"))
        classes = r.get("classes")
        ap = {}
        if per_class is not None and classes is not None:
            for c, v in zip(torch.atleast_1d(classes).tolist(), torch.atleast_1d(per_class).tolist()):
                ap[self.task.classes[int(c)]] = float(v)
        out["ap_per_class"] = ap
        # precision (T iou, R=101 recall points, K classes, A areas, M max-dets): IoU 0.5, all areas, 100 dets
        prec = r.get(f"{bbox}precision", r.get("precision"))
        if isinstance(prec, torch.Tensor) and prec.ndim == 5 and classes is not None:
            names = [self.task.classes[int(c)] for c in torch.atleast_1d(classes).tolist()]
            out["pr50"] = {n: prec[0, :, i, 0, -1].clamp(min=0).cpu() for i, n in enumerate(names)}
        out["image_f1"] = torch.tensor([d["f1"] for d in self.per_image])
        out["loss"] = float("nan")  # detectors give losses in training mode only
        return out


def _f1_at_50(p: dict, t: dict) -> float:
    """How well one image went: F1 of the detections scoring >= 0.3 against the ground truth, matched
    greedily at IoU 0.5 with the right class. Used to find the worst images for the report."""
    from torchvision.ops import box_iou

    keep = p["scores"] >= 0.3
    pb, pl = p["boxes"][keep], p["labels"][keep]
    tb, tl = t["boxes"], t["labels"]
    if len(pb) == 0 and len(tb) == 0:
        return 1.0
    if len(pb) == 0 or len(tb) == 0:
        return 0.0
    iou = box_iou(pb, tb) * (pl[:, None] == tl[None, :])
    matched, hit = set(), 0
    for i in range(len(pb)):
        j = int(iou[i].argmax())
        if iou[i, j] >= 0.5 and j not in matched:
            matched.add(j)
            hit += 1
    return 2 * hit / (len(pb) + len(tb))


def _export_module(model, mean, std):
    """[0, 1] images in, every candidate out: (boxes (B, A, 4) xyxy pixels, scores (B, A, K)); the
    normalisation is export's own `NormalizedModel`, the forward the detector's `forward_export`."""
    from ..deploy.export import NormalizedModel

    class ExportDetector(NormalizedModel):
        def forward(self, images):
            return self.model.forward_export((images - self.mean) * self.inv_std)

    return ExportDetector(model, mean, std)


@register_task(name="detect")
class DetectionTask(Task):
    name = "detect"
    target_kind = "objects"
    monitor = "val_map"
    # what sits under the user's choices for a detection run (`config.task_defaults`); a model's own
    # default_cfg["recipe"] goes on top of these
    defaults = dict(optimizer="adamw", lr=2e-3, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0,
                    epochs=12, batch_size=64, label_smoothing=0.0, tta=False, grad_clip=10.0,
                    augment="hflip=0.5,scale=0.25,translate=0.1,color=0.2")

    def __init__(self, classes, model_cfg: dict | None = None, **options):
        options.pop("label_smoothing", None)  # a classification option
        super().__init__(classes, model_cfg, **options)
        self.masks = bool(self.model_cfg.get("masks", False))
        self.background = bool(self.model_cfg.get("background", False))
        self.metrics = (MetricSpec("map", "ap"), MetricSpec("map50", "ap"), MetricSpec("map75", "ap"),
                        MetricSpec("mar100", "ap", bar=False)) + (
            (MetricSpec("mask_map", "ap"), MetricSpec("mask_map50", "ap")) if self.masks else ())
        self.train_metrics = ()

    def model_kwargs(self, image_size: int | None = None) -> dict:
        """K classes, plus the background class of torchvision's frameworks; the image side, to which
        detectors fit their anchors (they never resize)."""
        kw = dict(num_classes=self.num_classes + (1 if self.background else 0))
        if image_size is not None:
            kw["image_size"] = int(image_size)
        return kw

    def spec(self, column: str) -> MetricSpec:
        if column in ("val_loss", "loss"):
            raise CnnkitError("detectors report no validation loss (they compute losses in training mode only); "
                              "monitor val_map, val_map50 or val_map75")
        return super().spec(column)

    # -- data and training
    def batch_augment(self, spec):
        from ..data.object_augment import ObjectAugment, parse_object_augment

        return ObjectAugment(parse_object_augment(spec))

    def train_step(self, model, x, y):
        losses = model(x, y.per_image())
        if not isinstance(losses, dict):
            raise CnnkitError(f"{type(model).__name__} did not return a dict of losses in training mode; is it a "
                              "detector (models/detect/_base.py)?")
        n = len(x)
        loss = sum(v.float() for v in losses.values())
        return loss, {k: v.detach().float() * n for k, v in losses.items()}

    def forward_eval(self, model, x, tta: bool = False):
        return model(x)

    def evaluator(self, device) -> DetectionEvaluator:
        return DetectionEvaluator(self, device)

    def synthetic_targets(self, n: int, size, generator: torch.Generator):
        from ..data.targets import ObjectTargets

        h, w = size
        items = []
        for _ in range(n):
            k = int(torch.randint(1, 4, (1,), generator=generator))
            xy = torch.rand(k, 2, generator=generator) * torch.tensor([w * 0.6, h * 0.6])
            wh = (0.15 + 0.25 * torch.rand(k, 2, generator=generator)) * torch.tensor([w, h])
            boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], 1)
            d = dict(boxes=boxes, labels=torch.randint(0, self.num_classes, (k,), generator=generator))
            if self.masks:
                m = torch.zeros(k, h, w, dtype=torch.bool)
                for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                    m[i, y0:y1, x0:x1] = True
                d["masks"] = m
            items.append(d)
        return ObjectTargets.from_list(items)

    # -- predictions
    def decode(self, outputs: list[dict], conf: float = 0.25, **options) -> list[dict]:
        preds = []
        for o in outputs:
            keep = o["scores"].float() >= conf
            p = dict(boxes=[[round(float(v), 2) for v in b] for b in o["boxes"][keep].float().cpu()],
                     scores=[round(float(s), 4) for s in o["scores"][keep].float().cpu()],
                     label_ids=[int(k) for k in o["labels"][keep].cpu()])
            p["labels"] = [self.classes[k] for k in p["label_ids"]]
            if "masks" in o:
                p["masks"] = (o["masks"][keep] > MASK_THRESHOLD).cpu()
            preds.append(p)
        return preds

    def describe(self, pred: dict) -> list[str]:
        n = len(pred["labels"])
        lines = [f"{n} object{'s' if n != 1 else ''}"]
        for name, s, b in zip(pred["labels"], pred["scores"], pred["boxes"]):
            lines.append(f"{name:>12s} {s:5.1%}  box {b[0]:.0f},{b[1]:.0f} - {b[2]:.0f},{b[3]:.0f}")
        return lines

    def draw(self, image: torch.Tensor, pred: dict) -> torch.Tensor:
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        img = image if image.shape[0] == 3 else image.expand(3, -1, -1)
        img = img.to(torch.uint8).contiguous()
        colours = [_colour(k) for k in pred["label_ids"]]
        masks = pred.get("masks")
        if masks is not None and len(masks):
            img = draw_segmentation_masks(img, masks.bool(), alpha=0.4, colors=colours)
        if pred["boxes"]:
            scores = pred.get("scores")  # none for the ground truth
            labels = pred["labels"] if scores is None else [f"{n} {s:.2f}" for n, s in zip(pred["labels"], scores)]
            img = draw_bounding_boxes(img, torch.tensor(pred["boxes"]), labels=labels, colors=colours, width=1)
        return img

    def save_drawing(self, image, pred, folder, stem: str):
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        drawn = self.draw(image, pred)
        scale = max(1, 256 // max(drawn.shape[-2:]))  # small images are enlarged so the labels can be read
        pil = Image.fromarray(drawn.permute(1, 2, 0).numpy())
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        path = folder / f"{stem}.png"
        pil.save(path)
        return path

    def save_predictions(self, results: list[dict], folder) -> None:
        """COCO results format: one entry per detection, bbox as [x, y, width, height]; image_id is the
        position of the image on the command line and file_name its path."""
        from ..utils import atomic_write_text

        rows = []
        for i, r in enumerate(results):
            for b, s, k in zip(r["boxes"], r["scores"], r["label_ids"]):
                rows.append(dict(image_id=i, file_name=r["image"], category_id=k, category=self.classes[k],
                                 bbox=[b[0], b[1], round(b[2] - b[0], 2), round(b[3] - b[1], 2)], score=s))
        for r in results:
            r.pop("masks", None)  # drawn into the PNGs; not JSON
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(folder) / "predictions.json", json.dumps(rows, indent=1))

    def eval_summary(self, res: dict) -> dict:
        def v(x) -> str:  # COCO writes -1 where an area range has no objects
            return f"{x:.3f}" if x >= 0 else "n/a"

        rows = [("AP @[.50:.95]", "all", v(res['map'])), ("AP @.50", "all", v(res['map50'])),
                ("AP @.75", "all", v(res['map75'])), ("AP @[.50:.95]", "small", v(res['map_small'])),
                ("AP @[.50:.95]", "medium", v(res['map_medium'])),
                ("AP @[.50:.95]", "large", v(res['map_large'])),
                ("AR @[.50:.95], 1 det", "all", v(res['mar1'])),
                ("AR @[.50:.95], 10 dets", "all", v(res['mar10'])),
                ("AR @[.50:.95], 100 dets", "all", v(res['mar100']))]
        if self.masks:
            rows += [("mask AP @[.50:.95]", "all", v(res['mask_map'])),
                     ("mask AP @.50", "all", v(res['mask_map50']))]
        per_class = [(c, v(ap)) for c, ap in res["ap_per_class"].items()]
        return dict(lines=[f"mAP {res['map']:.3f}  mAP50 {res['map50']:.3f}  mAP75 {res['map75']:.3f}"],
                    tables=[("COCO evaluation", ("metric", "area", "value"), rows),
                            ("per class", ("class", "AP @[.50:.95]"), per_class)])

    def report_sections(self) -> tuple:
        from ..report import detect as sections

        return sections.SECTIONS

    def export_spec(self, model, mean, std) -> ExportSpec:
        if not model.default_cfg.get("export") or not hasattr(model, "forward_export"):
            raise CnnkitError(f"{model.default_cfg.get('architecture', type(model).__name__)} cannot be exported yet "
                              "(two-stage detectors decode inside data-dependent loops); one-stage detectors can: "
                              "yolo_*, yolov1, ssd*")

        def compare(got, ref) -> float:
            """Max |difference| of the raw candidates (boxes in pixels, scores), and of the decoded detections
            scoring >= 0.25 matched as sets (same class, nearest box): inf when one side keeps a detection
            the other has not. Sets, because two candidates whose scores differ in the last bit may leave
            NMS in either order."""
            worst = max((g.float() - r.float()).abs().max().item() for g, r in zip(got, ref))
            keep = model.score_thresh
            model.score_thresh = 0.25
            try:
                for a, b in zip(model.postprocess(*got), model.postprocess(*ref)):
                    worst = max(worst, _set_distance(a, b), _set_distance(b, a))
            finally:
                model.score_thresh = keep
            return worst

        return ExportSpec(_export_module(model, mean, std), ["boxes", "scores"], compare,
                          notes=["boxes (N, A, 4) xyxy pixels and scores (N, A, classes) of every candidate, "
                                 "before the score threshold and class-wise NMS"])


def _set_distance(a: dict, b: dict, slack: float = 1e-3) -> float:
    """The largest box difference from each detection of `a` to the nearest same-class detection of `b`;
    inf when one has none, unless its score is within `slack` of the threshold (present on one side only
    by rounding)."""
    worst = 0.0
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):
        same = b["boxes"][b["labels"] == label]
        d = (same - box).abs().amax(1).min().item() if len(same) else float("inf")
        if d > 1e-2 and score < 0.25 + slack:
            continue
        worst = max(worst, d)
    return worst


def _colour(k: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    return palette[k % len(palette)]


__all__ = ["DetectionTask"]
