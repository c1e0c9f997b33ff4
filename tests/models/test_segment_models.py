"""The semantic-segmentation zoo (cnnkit.models.segment), driven by the registry.

- every model with default_cfg task "segment": its default_cfg, shapes in eval and training mode
  (the aux tuple iff it has an aux head), odd sizes, grey input and reset_classifier, on the
  meta device (no weights: cheap, also for the ResNet-101 models);
- real weights: a training step gives finite gradients on every trainable parameter, eval gives
  finite logits at an odd size (the big models are covered by their small siblings, which run the
  same code, and by the torchvision comparisons);
- parameter counts equal torchvision's, and after loading torchvision's random state dicts the
  outputs (and aux outputs) equal torchvision's;
- U-Net and FCN-VGG parameter counts against hand counts from the channel numbers; FCN's
  bilinear transposed convs against torch's own bilinear interpolation;
- backbone= with other cnnkit models.
"""
import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision.models.segmentation as tvs
from torch import nn

from cnnkit.models import MODELS, create_model, list_models, load_torchvision_weights
from cnnkit.models.googlenet import loss_with_aux
from cnnkit.models.segment._base import bilinear_upsampler
from cnnkit.models.vgg import VGG_CFGS
from models._zoo_helpers import fill_, n_params

SEGMENT = list_models(task="segment")
MINE = ["fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn_resnet18", "fcn_resnet50", "fcn_resnet101",
        "deeplabv3_resnet18", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
        "deeplabv3plus_resnet18", "deeplabv3plus_resnet50", "lraspp_mobilenet_v3_large", "unet", "unet_small",
        "unet_resnet18"]
K = 3
CFG_KEYS = ("input_size", "mean", "std", "first_conv", "classifier", "aux", "aux_loss_weight", "paper", "backbone",
            "tv_name", "output_stride", "architecture", "num_classes")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a machine shared with other jobs
    OpenMP's spinning threads make each op up to 100x slower; the count is given back after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_every_segment_model_is_listed_under_its_task():
    assert set(MINE) <= set(SEGMENT) and len(SEGMENT) == len(set(SEGMENT))


@pytest.mark.parametrize("name", SEGMENT)
def test_cfg_and_shapes(name):
    """On the meta device: eval (2, K, H, W) for 64 x 64 and 50 x 70, training the aux tuple iff
    default_cfg["aux"], and the interface's fields."""
    assert (MODELS.get(name).__doc__ or "").strip()
    m = meta_model(name, num_classes=K)
    cfg = m.default_cfg
    assert cfg["task"] == "segment" and cfg["export"] is True and cfg["num_classes"] == K == m.num_classes
    assert all(k in cfg for k in CFG_KEYS) and cfg["architecture"] == name and cfg["aux_loss_weight"] == 0.5
    assert cfg["input_size"][0] == 3 and len(cfg["mean"]) == len(cfg["std"]) == 3 and min(cfg["input_size"]) >= 3
    assert cfg["output_stride"] in (8, 16, 32) and m.aux_loss_weight == 0.5
    mods = dict(m.named_modules())
    first, cls = mods[cfg["first_conv"]], mods[cfg["classifier"]]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    assert isinstance(cls, nn.Conv2d) and cls.kernel_size == (1, 1) and cls.out_channels == K
    assert m.get_classifier() is cls and m.has_aux is cfg["aux"]

    m.eval()
    for shape in ((2, 3, 64, 64), (1, 3, 50, 70)):
        y = m(torch.empty(shape, device="meta"))
        assert isinstance(y, torch.Tensor) and y.shape == (shape[0], K) + shape[2:]
    m.train()
    out = m(torch.empty(2, 3, 64, 64, device="meta"))
    assert isinstance(out, tuple) is cfg["aux"]
    for o in out if cfg["aux"] else (out,):
        assert o.shape == (2, K, 64, 64)

    m.reset_classifier(5)
    assert m.num_classes == 5 == m.default_cfg["num_classes"] and m.get_classifier().out_channels == 5
    assert m.eval()(torch.empty(1, 3, 33, 47, device="meta")).shape == (1, 5, 33, 47)
    grey = meta_model(name, num_classes=K, in_chans=1)
    assert len(grey.default_cfg["mean"]) == 1
    assert grey.eval()(torch.empty(1, 1, 64, 64, device="meta")).shape == (1, K, 64, 64)


REAL = [  # (name, kwargs): the small models, and the big ones' code through small settings
    ("fcn8s_vgg16", dict(fc_width=64)), ("fcn16s_vgg16", dict(fc_width=64)), ("fcn32s_vgg16", dict(fc_width=64)),
    ("fcn_resnet18", dict(aux_loss=True)), ("deeplabv3_resnet18", dict(aux_loss=True)),
    ("deeplabv3plus_resnet18", dict(aux_loss=True)), ("deeplabv3_mobilenet_v3_large", {}),
    ("lraspp_mobilenet_v3_large", {}), ("unet_small", {}), ("unet_resnet18", {}),
]


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    """Cross-entropy (+ 0.5 aux) on random labels, backward; every trainable parameter gets a finite grad."""
    model.train()
    out = model(x)
    target = torch.randint(0, model.num_classes, (x.shape[0],) + x.shape[2:], generator=torch.Generator())
    loss = loss_with_aux(out, target, F.cross_entropy, model.aux_loss_weight)
    assert torch.isfinite(loss)
    loss.backward()
    bad = [n for n, p in model.named_parameters()
           if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())]
    assert not bad, f"parameters without a finite gradient: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,kwargs", REAL, ids=[n for n, _ in REAL])
def test_train_step_and_odd_size(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    train_step(model, x)
    if model.has_aux:
        logits, aux = model.train()(x)
        assert logits.shape == aux.shape == (2, K, 64, 64)
    with torch.no_grad():
        y = model.eval()(torch.randn(1, 3, 50, 70))
    assert y.shape == (1, K, 50, 70) and y.isfinite().all()


# ------------------------------------------------------------------ torchvision


TV_COUNTS = [  # torchvision's numbers at 21 classes (its weights' meta, and its models built without weights)
    ("fcn_resnet50", True, 35_322_218), ("fcn_resnet50", False, 32_957_013),
    ("fcn_resnet101", True, 54_314_346), ("fcn_resnet101", False, 51_949_141),
    ("deeplabv3_resnet50", True, 42_004_074), ("deeplabv3_resnet50", False, 39_638_869),
    ("deeplabv3_resnet101", True, 60_996_202), ("deeplabv3_resnet101", False, 58_630_997),
    ("deeplabv3_mobilenet_v3_large", True, 11_029_328), ("deeplabv3_mobilenet_v3_large", False, 11_025_477),
    ("lraspp_mobilenet_v3_large", None, 3_221_538),
]


def tv_model(name: str, aux):
    kw = {} if aux is None else dict(aux_loss=aux)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(tvs, name)(weights=None, weights_backbone=None, num_classes=21, **kw)


@pytest.mark.parametrize("name,aux,count", TV_COUNTS)
def test_parameter_counts_equal_torchvision(name, aux, count):
    ours = meta_model(name, num_classes=21, **({} if aux is None else dict(aux_loss=aux)))
    assert n_params(ours) == n_params(tv_model(name, aux)) == count
    assert ours.default_cfg["tv_name"] == name and ours.has_aux is bool(aux)


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
                                  "lraspp_mobilenet_v3_large"])
def test_outputs_equal_torchvision(name):
    aux = None if name.startswith("lraspp") else True
    ref = fill_(tv_model(name, aux).to_empty(device="cpu")).eval()
    ours = meta_model(name, num_classes=21).to_empty(device="cpu")
    load_torchvision_weights(ours, ref.state_dict())
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(x)
        got = ours(x)
        logits, aux_logits = ours.forward_with_aux(x)  # the training-mode outputs, in eval (BN) mode
    assert want["out"].abs().max() > 0.1  # a real comparison
    torch.testing.assert_close(got, want["out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, want["out"], atol=1e-4, rtol=0)
    if aux:
        torch.testing.assert_close(aux_logits, want["aux"], atol=1e-4, rtol=0)
    else:
        assert aux_logits is None


@pytest.mark.parametrize("name", MINE)
def test_docstring_parameter_count(name):
    """Each builder's docstring states its parameter count, at 21 classes (U-Net: 3 inputs, 2 classes)."""
    doc = " ".join(MODELS.get(name).__doc__.split())
    found = re.search(r"([\d,]+) parameters (at 21 classes|for 3 input channels and 2 classes)", doc)
    assert found, f"{name}: no parameter count in its docstring"
    k = 21 if found.group(2).startswith("at") else 2
    assert n_params(meta_model(name, num_classes=k)) == int(found.group(1).replace(",", ""))


def test_dilated_bodies_report_their_strides():
    m = meta_model("fcn_resnet18", num_classes=K, output_stride=16)
    assert [f["reduction"] for f in m.encoder.body.feature_info] == [2, 4, 8, 16, 16]
    assert m.default_cfg["output_stride"] == 16 and m.default_cfg["tv_name"] is None
    d = meta_model("deeplabv3_resnet50", num_classes=K, output_stride=16)
    assert d.default_cfg["atrous_rates"] == (6, 12, 18) and d.default_cfg["tv_name"] is None
    assert meta_model("deeplabv3_resnet50", num_classes=K).default_cfg["atrous_rates"] == (12, 24, 36)
    body = meta_model("deeplabv3_resnet50", num_classes=K).encoder.body
    assert body.layer4[0].conv2.dilation == (2, 2) and body.layer4[1].conv2.dilation == (4, 4)  # torchvision's
    assert body.layer3[0].conv2.dilation == (1, 1) and body.layer3[0].conv2.stride == (1, 1)


# ------------------------------------------------------------------ hand counts and the bilinear kernels


def double_conv(c_in: int, c_out: int) -> int:
    """Two 3x3 convs without bias, each with a BatchNorm (weight + bias)."""
    return 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out


def unet_hand_count(c_in: int, k: int, w: int = 64, depth: int = 4) -> int:
    widths = [w * 2**i for i in range(depth + 1)]
    down = double_conv(c_in, widths[0]) + sum(double_conv(widths[i - 1], widths[i]) for i in range(1, depth + 1))
    up = 0
    for i in range(depth, 0, -1):  # 2x2 transposed conv c -> c/2 (with bias), then a double conv on the concat
        c = widths[i]
        up += 4 * c * (c // 2) + c // 2 + double_conv(c // 2 + widths[i - 1], widths[i - 1])
    return down + up + widths[0] * k + k  # 1x1 classifier with bias


def test_unet_parameter_count_is_the_hand_count():
    assert unet_hand_count(3, 2) == 31_037_698
    assert n_params(meta_model("unet", num_classes=2, in_chans=3)) == 31_037_698
    assert n_params(meta_model("unet_small", num_classes=2)) == unet_hand_count(3, 2, w=16)
    assert n_params(meta_model("unet", num_classes=5, in_chans=1, depth=3)) == unet_hand_count(1, 5, depth=3)


def fcn_hand_count(stride: int, k: int) -> int:
    convs, c = 0, 3
    for v in VGG_CFGS["D"]:  # VGG-16 conv1_1 .. conv5_3, 3x3 with bias
        if v != "M":
            convs, c = convs + 9 * c * v + v, v
    fc6, fc7, score_fr = 49 * 512 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * k + k
    up = lambda f: k * k * (2 * f) ** 2  # noqa: E731  (K -> K transposed conv, kernel 2f, no bias)
    skips = {32: 0, 16: 512 * k + k + up(2), 8: 512 * k + k + up(2) + 256 * k + k + up(2)}[stride]
    return convs + fc6 + fc7 + score_fr + skips + up(stride)


@pytest.mark.parametrize("stride,count", [(32, 136_152_917), (16, 134_815_994), (8, 134_489_759)])
def test_fcn_vgg_parameter_counts_are_the_hand_counts(stride, count):
    assert fcn_hand_count(stride, 21) == count
    assert n_params(meta_model(f"fcn{stride}s_vgg16", num_classes=21)) == count


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_transposed_conv_is_bilinear_interpolation(factor):
    up = bilinear_upsampler(2, factor)
    inner = slice(factor, -factor)  # the transposed conv has no border clamping: compare away from the edges
    with torch.no_grad():
        const = up(torch.full((1, 2, 5, 6), 3.0))
        assert const.shape == (1, 2, 5 * factor, 6 * factor)
        torch.testing.assert_close(const[..., inner, inner], torch.full_like(const[..., inner, inner], 3.0))
        x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(factor))
        ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        torch.testing.assert_close(up(x)[..., inner, inner], ref[..., inner, inner], atol=1e-5, rtol=0)


def test_fcn_upsamplers():
    m = meta_model("fcn8s_vgg16", num_classes=K)
    assert not m.upscore.weight.requires_grad and m.upscore.stride == (8, 8)  # final: fixed bilinear
    assert m.upscore2.weight.requires_grad and m.upscore_pool4.weight.requires_grad  # 2x steps: learned
    real = bilinear_upsampler(K, 8)
    assert m.upscore.weight.shape == real.weight.shape == (K, K, 16, 16)
    assert torch.equal(real.weight[0, 1], torch.zeros(16, 16))  # each class upsampled on its own


# ------------------------------------------------------------------ backbones


@pytest.mark.parametrize("name,backbone,stride", [
    ("deeplabv3_resnet18", "mobilenet_v3_small", 16),   # dilated last stage
    ("deeplabv3_resnet18", "efficientnet_b0", 32),      # cannot dilate: its own strides, rates halved
    ("unet", "mobilenet_v3_small", 32),
    ("unet", "efficientnet_b0", 32),
    ("deeplabv3plus_resnet18", "mobilenet_v3_small", 16),
])
def test_other_backbones(name, backbone, stride):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, backbone=backbone)
    cfg = model.default_cfg
    assert cfg["backbone"] == backbone and cfg["output_stride"] == stride and cfg["tv_name"] is None
    if name.startswith("deeplabv3_"):
        assert cfg["atrous_rates"] == {16: (6, 12, 18), 32: (3, 6, 9)}[stride]
    train_step(model, torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 50, 70)).shape == (1, K, 50, 70)


def test_built_backbone_and_deepcopy():
    """A built model serves as the backbone; a deep copy (EMA) runs on its own hooks."""
    body = create_model("resnet18", num_classes=0, replace_stride_with_dilation=(False, False, True))
    model = create_model("deeplabv3_resnet18", num_classes=K, backbone=body).eval()
    assert model.default_cfg["backbone"] == "resnet18" and model.default_cfg["output_stride"] == 16
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        for p in twin.parameters():
            p.add_(0.01)
        torch.testing.assert_close(model(x), y)
        assert not torch.allclose(twin(x), y)


def test_eval_model_exports_to_onnx_with_one_output():
    """The encoder's forward hooks trace; eval mode has one output, equal to the eager model's."""
    import io

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = create_model("lraspp_mobilenet_v3_large", num_classes=K).eval()
    x = torch.randn(1, 3, 64, 64)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, input_names=["images"], output_names=["logits"], dynamo=False)
    outs = ort.InferenceSession(f.getvalue()).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert len(outs) == 1 and outs[0].shape == (1, K, 64, 64)
    torch.testing.assert_close(torch.from_numpy(outs[0]), ref, atol=1e-4, rtol=0)
