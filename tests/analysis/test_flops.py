"""MACs against three oracles: torchvision's published GFLOPS (which are MACs), PyTorch's
FlopCounterMode, and the closed-form K·K·C_in/groups·C_out·H_out·W_out per layer."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.analysis import count_macs, summary

# torchvision's model cards, "GFLOPS" at 224 px (they count multiply-adds)
PUBLISHED = {"resnet18": 1.81, "resnet50": 4.09, "alexnet": 0.714, "vgg16": 15.47, "googlenet": 1.50}


def _tv(name: str, meta: bool = True) -> nn.Module:
    kw = dict(aux_logits=False, init_weights=False) if name == "googlenet" else {}
    if meta:  # random init of 138M parameters costs seconds; shapes are all MACs need
        with torch.device("meta"):
            return getattr(torchvision.models, name)(weights=None, **kw)
    return getattr(torchvision.models, name)(weights=None, **kw)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macs_match_torchvision_published(name):
    model = _tv(name)
    s = summary(model, (3, 224, 224), device="meta")
    assert s.total_macs / 1e9 == pytest.approx(PUBLISHED[name], rel=0.01)
    assert s.total_flops == 2 * s.total_macs
    assert s.total_params == sum(p.numel() for p in model.parameters())


def test_meta_pass_equals_cpu_pass():
    model = torchvision.models.resnet18(weights=None)
    a, b = summary(model, (3, 64, 64)), summary(model, (3, 64, 64), device="meta")
    assert a.total_macs == b.total_macs and a.activation_bytes == b.activation_bytes
    assert [(r.name, r.output_shape, r.macs, r.rf) for r in a.rows] == \
        [(r.name, r.output_shape, r.macs, r.rf) for r in b.rows]
    assert next(model.parameters()).device.type == "cpu"  # the model was not touched


class ConvZoo(nn.Module):
    """Every convolution the guide names: standard, grouped, depthwise + pointwise, dilated, transposed."""

    def __init__(self):
        super().__init__()
        self.std = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 24, 1)
        self.dilated = nn.Conv2d(24, 24, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(24, 8, 4, stride=2, padding=1)
        self.rect = nn.Conv2d(8, 8, (1, 5), padding=(0, 2))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.up(self.dilated(self.pw(self.dw(self.grouped(self.std(x))))))
        return self.fc(self.rect(x).mean((2, 3)))


def _flop_counter_macs(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("make,size,batch", [(ConvZoo, 40, 2), (lambda: torchvision.models.resnet18(weights=None), 32, 1)])
def test_macs_match_flop_counter(make, size, batch):
    model = make().eval()
    x = torch.rand(batch, 3, size, size)
    s = summary(model, (3, size, size), batch_size=batch)
    assert s.total_macs == _flop_counter_macs(model, x) > 0
    assert sum(r.macs for r in s.rows) == s.total_macs
    if make is ConvZoo:
        assert count_macs(model, x) == s.total_macs


def test_per_layer_macs_closed_form():
    model = ConvZoo()
    s = summary(model, (3, 40, 40))
    modules = dict(model.named_modules())
    checked = 0
    for r in s.rows:
        m = modules.get(r.name)
        if isinstance(m, nn.ConvTranspose2d):  # every input position meets the whole kernel
            expected = m.weight.numel() * math.prod(r.input_shape[2:])
        elif isinstance(m, nn.Conv2d):  # K·K·C_in/groups·C_out·H_out·W_out
            expected = math.prod(m.kernel_size) * m.in_channels // m.groups * m.out_channels \
                * math.prod(r.output_shape[2:])
        elif isinstance(m, nn.Linear):
            expected = m.in_features * m.out_features
        else:
            assert r.macs == 0, r.name
            continue
        assert r.macs == expected, r.name
        assert r.explain.split("MACs = ")[1].split(" = ")[1].split(";")[0] == f"{expected:,}"
        checked += 1
    assert checked == 8


class Attention(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        self.qkv = nn.Linear(d, 3 * d)
        self.heads = heads

    def forward(self, x):  # (B, N, D)
        x = self.mha(x, x, x, need_weights=False)[0]
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d/h)
        return (a @ torch.ones(d // self.heads, 5)).sum()  # a plain matmul too


def test_attention_macs():
    n, d = 10, 32
    s = summary(Attention(d).eval(), (n, d))
    mha = n * d * 3 * d + 2 * n * n * d + n * d * d  # in-projection, Q K^T and P V, out-projection
    qkv, sdpa, mm = n * d * 3 * d, 2 * n * n * d, n * d * 5
    assert s.total_macs == mha + qkv + sdpa + mm
    # FlopCounterMode misses the fused CPU kernels (native MHA, flash attention for CPU) under
    # no_grad; with gradients on, MHA decomposes into mm's it does count, and sdpa stays uncounted
    with FlopCounterMode(display=False) as fc:
        Attention(d).eval()(torch.rand(1, n, d))
    assert fc.get_total_flops() // 2 <= s.total_macs
