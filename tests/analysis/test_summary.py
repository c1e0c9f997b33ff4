"""Parameters, shapes, memory, formats and the filled-in formulas of `summary`."""
import json

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.analysis import summary
from cnnkit.registry import CnnkitError


@pytest.fixture(scope="module")
def resnet18_meta():
    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None)
    return summary(model, (3, 224, 224), device="meta"), model


def test_guide_example_conv_parameters():
    """Guide §2.2: 64 kernels of 3x3 on a 224x224x3 input have (3·3·3 + 1)·64 = 1,792 parameters."""
    s = summary(nn.Conv2d(3, 64, 3), (3, 224, 224))
    (row,) = s.rows
    assert s.total_params == row.params == 1792
    assert "params = (3·3·3 + 1)·64 = 1,792" in row.explain
    assert "out = ⌊(224 − 3 + 2·0)/1⌋ + 1 = 222" in row.explain
    assert row.output_shape == (1, 64, 222, 222)


def test_explain_fills_in_the_layer_numbers(resnet18_meta):
    s, _ = resnet18_meta
    conv1 = s.rows[0]
    assert conv1.name == "conv1"
    assert conv1.explain.startswith("out = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112; params = (7·7·3 + 0)·64 = 9,408; "
                                    "MACs = 7·7·3·64·112·112 = 118,013,952; RF = 1 + (7−1)·1 = 7; jump = 1·2 = 2")
    dilated = summary(nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), (8, 56, 56)).rows[0]
    assert "out = ⌊(56 − 2·(3−1) − 1 + 2·2)/1⌋ + 1 = 56" in dilated.explain
    assert "params = (3·3·8/2 + 1)·8 = 296" in dilated.explain
    assert "RF = 1 + (5−1)·1 = 5 (k_eff = 2·(3−1) + 1 = 5)" in dilated.explain
    text = s.render("table", explain=True)
    assert "conv1: out = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112" in text


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_parameter_totals(name):
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    next(model.parameters()).requires_grad_(False)  # a frozen stem weight
    s = summary(model, (3, 64, 64), device="meta")
    expected = sum(p.numel() for p in model.parameters())
    assert s.total_params == expected == sum(r.params for r in s.rows)
    assert s.trainable_params == expected - next(model.parameters()).numel()


def test_activation_memory_is_dtype_aware_and_counts_inplace_once():
    def net(inplace):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.Flatten())

    out_bytes = 8 * 16 * 16 * 4  # (1, 8, 16, 16) float32
    s = summary(net(True), (3, 16, 16))
    assert [r.act_bytes for r in s.rows] == [out_bytes] * 3
    assert s.activation_bytes == out_bytes  # in-place ReLU and the flatten view are no new memory
    assert summary(net(False), (3, 16, 16)).activation_bytes == 2 * out_bytes
    s64 = summary(net(False).double(), (3, 16, 16), batch_size=3)
    assert s64.dtype == "float64" and s64.activation_bytes == 2 * out_bytes * 2 * 3


def test_model_state_is_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).train()
    before = model[1].running_mean.clone()
    summary(model, (3, 16, 16))
    assert all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, before) and model[1].num_batches_tracked.item() == 0


def test_json_has_totals(resnet18_meta):
    s, model = resnet18_meta
    data = json.loads(s.render("json"))
    assert data["params"] == sum(p.numel() for p in model.parameters()) == 11_689_512
    assert data["macs"] == s.total_macs and data["flops"] == 2 * data["macs"]
    assert data["input_size"] == [3, 224, 224] and data["output_shape"] == [1, 1000]
    assert data["activation_bytes"] == s.activation_bytes > 0
    assert len(data["rows"]) == len(s.rows) and data["rows"][0]["name"] == "conv1"
    assert data["rows"][0]["kernel"] == 7 and data["rows"][0]["rf"] == 7 and "explain" not in data["rows"][0]
    assert sum(r["macs"] for r in data["rows"]) == data["macs"]
    assert "explain" in json.loads(s.render("json", explain=True))["rows"][0]


def test_table_and_markdown(resnet18_meta):
    s, _ = resnet18_meta
    table = s.render("table")
    assert "9,408" in table and "11,689,512" in table and "1,814,073,344" in table
    assert "global" in table and "exact (torch.fx graph)" in table
    md = s.render("markdown", explain=True)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Layer"))
    assert lines[header + 1].startswith("|---|") and "---:" in lines[header + 1]
    assert lines[header + 2].startswith("| conv1 | Conv2d | 1×64×112×112 | 3→64 k7 s2 p3 | 9,408 | 118,013,952 | 7 | 2 |")
    assert "- `conv1`: out = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112" in md
    from rich.table import Table

    assert isinstance(s.to_table(explain=True), Table)


def test_user_errors_are_one_line():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(CnnkitError, match="input size"):
        summary(conv, (3, 0, 8))
    with pytest.raises(CnnkitError, match="check the input size") as e:
        summary(conv, (1, 16, 16))
    assert "\n" not in str(e.value)
    with pytest.raises(CnnkitError, match="json"):
        summary(conv, (3, 8, 8)).render("jsn")
