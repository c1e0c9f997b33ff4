"""SSD / SSDlite / Faster R-CNN / Mask R-CNN on torchvision's frameworks over cnnkit bodies.

- parameter counts equal torchvision's (built on the meta device: no memory, no init time);
- torchvision's random state dicts load, and then eval outputs equal torchvision's (labels + 1);
- every registered detector of these families trains (finite losses, gradients) and predicts with
  the interface of `models/detect/_base.py` on tiny 64 px images, one of them without objects.
"""
import warnings

import pytest
import torch
import torchvision.models.detection as tvd
from torchvision.ops import FrozenBatchNorm2d

from cnnkit.models import create_model, list_models, load_torchvision_weights
from cnnkit.models.detect.rcnn import freeze_batch_norm
from cnnkit.registry import CnnkitError
from models._zoo_helpers import fill_, n_params

MINE = ["ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
        "fasterrcnn_resnet18_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet18_fpn"]
TV_COUNTS = [  # torchvision's numbers (its docs / weights meta; the trainable-BN ones: built without weights)
    ("ssd300_vgg16", {}, 35_641_826),
    ("ssdlite320_mobilenet_v3_large", {}, 3_440_060),
    ("fasterrcnn_resnet50_fpn", {}, 41_755_286),
    ("fasterrcnn_resnet50_fpn", {"frozen_bn": False}, 41_808_406),
    ("maskrcnn_resnet50_fpn", {}, 44_401_393),
    ("maskrcnn_resnet50_fpn", {"frozen_bn": False}, 44_454_513),
]
# few proposals and samples: the ResNet-50 models stay quick on tiny images
FEW = dict(rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
           rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=32, box_batch_size_per_image=32)


def test_all_registered():
    assert set(MINE) <= set(list_models())
    for name in MINE:
        with torch.device("meta"):
            m = create_model(name, num_classes=5)
        cfg = m.default_cfg
        assert cfg["task"] == "detect" and cfg["background"] is True and cfg["num_classes"] == 5
        assert cfg["export"] is name.startswith("ssdlite")  # ssd300_vgg16: see ssd.py (forward_export exists)
        assert m.num_classes == 5 and hasattr(m, "score_thresh") and hasattr(m, "nms_thresh")
        assert dict(m.named_modules())[cfg["first_conv"]].__class__.__name__ == "Conv2d"


@pytest.mark.parametrize("name,kwargs,count", TV_COUNTS)
def test_parameter_counts_equal_torchvision(name, kwargs, count):
    with torch.device("meta"):
        model = create_model(name, num_classes=91, **kwargs)
    assert n_params(model) == count


def test_frozen_bn_and_trainable_layers():
    with torch.device("meta"):
        m = create_model("fasterrcnn_resnet50_fpn", num_classes=91)
        free = create_model("fasterrcnn_resnet50_fpn", num_classes=91, frozen_bn=False)
    body = m.net.backbone.body.body
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in body.modules())
    assert sum(isinstance(x, FrozenBatchNorm2d) for x in body.modules()) == 53
    # torchvision's pretrained-body setting: conv1 and layer1 frozen, layers 2-4 trained
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and body.layer4[2].conv3.weight.requires_grad
    assert all(p.requires_grad for p in free.parameters())


# ------------------------------------------------------------------ equal outputs after loading torchvision's weights


def tv_pair(name: str, tv_kwargs: dict, our_kwargs: dict, frozen: bool = False):
    """(ours, torchvision's) in eval mode, torchvision's random weights (and BN statistics) loaded into
    ours; both on the meta device first, so nothing is initialised twice. Both see the input as it
    is: torchvision's transform with mean 0, std 1 and min = max size = the input size."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(tvd, name)(weights=None, weights_backbone=None, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                                 **tv_kwargs)
        ours = create_model(name, num_classes=91, **our_kwargs)
    ref = ref.to_empty(device="cpu")
    if frozen:  # torchvision freezes its norms only with pretrained weights, which are not here
        freeze_batch_norm(ref.backbone.body)
    fill_(ref)
    ours.to_empty(device="cpu")
    load_torchvision_weights(ours, ref.state_dict())
    return ours.eval(), ref.eval()


def assert_same_detections(ours: list, ref: list, atol: float = 1e-4) -> float:
    diff = 0.0
    for a, b in zip(ours, ref, strict=True):
        assert len(b["boxes"]) > 0 and len(a["boxes"]) == len(b["boxes"])
        assert torch.equal(a["labels"] + 1, b["labels"])
        pairs = [(a["boxes"], b["boxes"]), (a["scores"], b["scores"])]
        if "masks" in b:
            assert a["masks"].dim() == 3
            pairs.append((a["masks"], b["masks"][:, 0]))
        for x, y in pairs:
            torch.testing.assert_close(x, y, atol=atol, rtol=0)
            diff = max(diff, (x - y).abs().max().item())
    return diff


@pytest.mark.parametrize("name,size,batch", [("ssd300_vgg16", 300, 1), ("ssdlite320_mobilenet_v3_large", 320, 2)])
def test_ssd_outputs_equal_torchvision(name, size, batch):
    ours, ref = tv_pair(name, dict(score_thresh=0.001, detections_per_img=50), dict(image_size=size))
    ours.detections_per_img = 50  # pushed into the postprocessing at the next call
    assert ours.default_cfg["tv_name"] == name
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_same_detections(ours(x), ref(list(x)))


@pytest.mark.parametrize("name,frozen", [("fasterrcnn_resnet50_fpn", False), ("maskrcnn_resnet50_fpn", True)])
def test_rcnn_outputs_equal_torchvision(name, frozen):
    size, few = 160, dict(rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
    ours, ref = tv_pair(name, dict(min_size=size, max_size=size, box_score_thresh=0.001, box_detections_per_img=8,
                                   **few), dict(image_size=size, frozen_bn=frozen, **few), frozen)
    ours.detections_per_img = 8
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same_detections(ours(x), ref(list(x)))


# ------------------------------------------------------------------ every detector on tiny images

S = 64


def tiny_batch(num_classes: int):
    """Two 64 px images: one object of the last foreground class (its label shifts to num_classes - 1
    inside, the largest torchvision accepts), and an image without objects."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, S, S, generator=g)
    mask = torch.zeros(1, S, S, dtype=torch.uint8)
    mask[0, 10:40, 12:30] = 1
    targets = [dict(boxes=torch.tensor([[12.0, 10.0, 30.0, 40.0]]), labels=torch.tensor([num_classes - 2]),
                    masks=mask),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                    masks=torch.zeros(0, S, S, dtype=torch.uint8))]
    return x, targets


def check_predictions(out: list, k: int, masks: bool, limit: int) -> None:
    assert isinstance(out, list) and len(out) == 2
    for d in out:
        n = len(d["boxes"])
        assert 0 < n <= limit
        assert d["boxes"].shape == (n, 4) and d["boxes"].dtype == torch.float32
        assert d["scores"].shape == (n,) and d["labels"].shape == (n,) and d["labels"].dtype == torch.int64
        assert 0 <= d["labels"].min() and d["labels"].max() < k  # 0-based foreground classes
        assert (d["boxes"][:, 2:] >= d["boxes"][:, :2]).all() and d["boxes"].min() >= 0 and d["boxes"].max() <= S
        assert ("masks" in d) is masks
        if masks:
            assert d["masks"].shape == (n, S, S) and 0 <= d["masks"].min() and d["masks"].max() <= 1


@pytest.mark.parametrize("name", MINE)
def test_tiny_train_and_predict(name):
    num_classes, k = 4, 3
    kwargs = dict(image_size=S, **(FEW if "rcnn" in name else {}))
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, **kwargs)
    x, targets = tiny_batch(num_classes)
    model.train()
    losses = model(x, targets)
    assert isinstance(losses, dict) and losses
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    model.eval()
    model.detections_per_img = 5  # a setting the task may change: pushed into the framework
    with torch.no_grad():
        out = model(x)
    check_predictions(out, k, "maskrcnn" in name, 5)
    if name.startswith("ssd"):  # export path: eval forward is postprocess(forward_export(x))
        with torch.no_grad():
            boxes, scores = model.forward_export(x)
        assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == k
        assert scores.min() >= 0 and (scores.sum(-1) <= 1 + 1e-5).all()  # softmax without the background
        for a, b in zip(model.postprocess(boxes, scores), out, strict=True):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(a[key], b[key])


def test_rcnn_predicts_in_training_mode_without_targets():
    model = create_model("fasterrcnn_resnet18_fpn", num_classes=4, image_size=S, **FEW).train()
    model.detections_per_img = 3
    x, _ = tiny_batch(4)
    with torch.no_grad():
        out = model(x)
    check_predictions(out, 3, False, 3)
    assert model.training and all(m.training for m in model.modules())  # modes given back


@pytest.mark.parametrize("name,backbone", [("ssdlite320_mobilenet_v3_large", "resnet18"),
                                           ("ssd300_vgg16", "mobilenet_v3_small")])
def test_ssd_on_any_backbone(name, backbone):
    model = create_model(name, num_classes=4, image_size=S, backbone=backbone)
    assert model.default_cfg["backbone"] == backbone and model.default_cfg["tv_name"] is None
    # strides 8, 16, 32 (8, 4, 2 px maps) and one extra block (1 px)
    assert len(model.net.anchor_generator.aspect_ratios) == 4
    x, targets = tiny_batch(4)
    losses = model.train()(x, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval().detections_per_img = 4
    with torch.no_grad():
        check_predictions(model(x), 3, False, 4)


def test_ssd_postprocess_is_deterministic_on_tied_scores():
    """A saturated softmax gives many exact 1.0 scores: ties go to the earlier default box."""
    model = create_model("ssdlite320_mobilenet_v3_large", num_classes=4, image_size=S)
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.5], [40, 40, 50, 50]]])
    scores = torch.full((1, 4, 3), 0.1)
    scores[..., 1] = 1.0  # class 1: four tied candidates; box 2 overlaps box 0 (IoU 0.95)
    model.score_thresh = 0.5
    for perm in (torch.arange(4), torch.tensor([3, 2, 1, 0])):
        (out,) = model.postprocess(boxes[:, perm], scores[:, perm])
        expect = [b for b in perm.tolist() if b != (2 if perm[0] == 0 else 0)]  # the later of 0 / 2 is suppressed
        assert torch.equal(out["boxes"], boxes[0, expect]) and out["labels"].tolist() == [1, 1, 1]


def test_ssdlite_small_images_get_a_stride_8_map():
    """Below 200 px SSDlite's first map is at stride 8 (64 px: 8, 4, 2, 1), so a default box lies near each
    small object; at 320 px it is torchvision's layout (20, 10, 5, 3, 2, 1) and loads its weights."""
    small = create_model("ssdlite320_mobilenet_v3_large", num_classes=4, image_size=64).eval()
    maps = small.net.backbone(torch.zeros(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps.values()] == [8, 4, 2, 1]
    assert small.net.backbone.out_channels[:3] == [240, 672, 480]
    coarse = create_model("ssdlite320_mobilenet_v3_large", num_classes=4, image_size=64, first_stride=16).eval()
    assert [m.shape[-1] for m in coarse.net.backbone(torch.zeros(1, 3, 64, 64)).values()] == [4, 2, 1]
    # the same body weights, only cut at one more place
    assert sum(p.numel() for p in small.net.backbone.features.parameters()) == \
        sum(p.numel() for p in coarse.net.backbone.features.parameters())
    with pytest.raises(CnnkitError, match="first_stride"):
        create_model("ssd300_vgg16", num_classes=4, image_size=64, first_stride=8)
    with pytest.raises(CnnkitError, match="8 or 16"):
        create_model("ssdlite320_mobilenet_v3_large", num_classes=4, image_size=64, first_stride=4)
