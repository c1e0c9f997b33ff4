"""The guide's own CNN, LeNet-5 (paper and modern) and FastNet, checked against plain PyTorch."""
import torch
from torch import nn

from cnnkit.models import create_model
from cnnkit.models.lenet import C3_TABLE


def guide_cnn(in_chans=3, num_classes=10):
    """The guide's §9 network, typed as the guide writes it."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)))
    classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(128, num_classes))
    return nn.Sequential(features, nn.Flatten(), classifier)


def test_seed_cnn_is_the_guides_network():
    ref = guide_cnn().eval()
    ours = create_model("seed_cnn", num_classes=10, in_chans=3).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 94_986
    # same tensors in the same order: copy by position, then the outputs must agree
    ref_sd, our_keys = ref.state_dict(), list(ours.state_dict())
    assert [tuple(v.shape) for v in ref_sd.values()] == [tuple(ours.state_dict()[k].shape) for k in our_keys]
    ours.load_state_dict(dict(zip(our_keys, ref_sd.values())))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_lenet5_modern_parameter_count_and_shapes():
    m = create_model("lenet5_modern", num_classes=10, in_chans=1)
    assert sum(p.numel() for p in m.parameters()) == 61_706
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert m.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 120, 1, 1)  # C5


def test_lenet5_paper_connection_table_and_rbf_output():
    m = create_model("lenet5", num_classes=10, in_chans=1).eval()
    c3 = m.features[4]
    # Table I of the paper: 6 maps see 3 inputs, 9 see 4, 1 sees all 6 -> 60 connections of 25 weights
    assert sorted(len(r) for r in C3_TABLE) == [3] * 6 + [4] * 9 + [6]
    assert int(c3.mask.sum()) == 60
    effective = int((c3.conv.weight * c3.mask).ne(0).sum()) + c3.conv.bias.numel()
    assert effective == 60 * 25 + 16 == 1_516  # the paper's C3 count
    # gradients never reach the masked-out weights
    x = torch.randn(2, 1, 32, 32)
    m.train()
    m(x).sum().backward()
    assert (c3.conv.weight.grad * (1 - c3.mask)).abs().sum() == 0
    # RBF logits are minus squared distances to the class codes
    with torch.no_grad():
        f6 = m.forward_head(m.forward_features(x), pre_logits=True)
        expect = -((f6[:, None, :] - m.head.fc.centres[None]) ** 2).sum(-1)
        assert torch.allclose(m.head.fc(f6), expect, atol=1e-4)
        assert set(m.head.fc.centres.unique().tolist()) <= {-1.0, 1.0}


def test_fastnet_widths_and_reductions():
    for name, width in (("fastnet", 16), ("fastnet_wide", 32)):
        m = create_model(name, num_classes=10, in_chans=1).eval()
        x = torch.randn(2, 1, 32, 32)
        feats = m.forward_features(x)
        assert feats.shape == (2, 8 * width, 4, 4)
        assert [f["reduction"] for f in m.feature_info] == [1, 2, 4, 8]
