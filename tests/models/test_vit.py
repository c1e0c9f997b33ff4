"""ViT: parameter counts and outputs against torchvision, the token interface, small inputs."""
import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model
from cnnkit.models._tv import load_torchvision_weights
from cnnkit.models.vit import VisionTransformer
from cnnkit.registry import CnnkitError

from models._zoo_helpers import n_params, random_state


@pytest.mark.parametrize("name,kwargs,tv_name", [
    ("vit_base", {}, "vit_b_16"),
    ("vit_base", {"patch_size": 32}, "vit_b_32"),
])
def test_param_count_matches_torchvision(name, kwargs, tv_name):
    with torch.device("meta"):
        ours, ref = create_model(name, num_classes=1000, **kwargs), getattr(torchvision.models, tv_name)()
    assert n_params(ours) == n_params(ref)
    assert name != "vit_base" or kwargs or n_params(ours) == 86_567_656
    assert ours.default_cfg["tv_name"] == tv_name


def test_class_generalises_to_vit_large_count():
    with torch.device("meta"):
        ours = VisionTransformer(embed_dim=1024, depth=24, num_heads=16)
        ref = torchvision.models.vit_l_16()
    assert n_params(ours) == n_params(ref)


def test_variant_sizes_match_timm():
    """torchvision has no Tiny/Small; timm's ViT-Ti/S (DeiT sizes) are the oracle."""
    timm = pytest.importorskip("timm")
    for ours_name, timm_name in (("vit_tiny", "vit_tiny_patch16_224"), ("vit_small", "vit_small_patch16_224")):
        with torch.device("meta"):
            ours, ref = create_model(ours_name, num_classes=1000), timm.create_model(timm_name, pretrained=False)
        assert n_params(ours) == n_params(ref)


def test_outputs_match_torchvision_vit_b_16():
    with torch.device("meta"):
        ref = torchvision.models.vit_b_16(image_size=64)
        ours = create_model("vit_base", num_classes=1000, img_size=64)
    sd = random_state(ref)
    ours.to_empty(device="cpu")
    load_torchvision_weights(ours, sd)
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = ours.forward_features(x)
        logits = ours.forward_head(tokens)
        expected = ref(x)
        # torchvision's encoder output, for the class token
        seq = torch.cat([ref.class_token.expand(2, -1, -1), ref._process_input(x)], 1)
        ref_cls = ref.encoder(seq)[:, 0]
    assert tokens.shape == (2, 1 + 16, 768)
    assert logits.abs().max() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.forward_head(tokens, pre_logits=True), ref_cls, atol=1e-5, rtol=1e-5)


def test_small_input_tokens_grid_and_map():
    m = create_model("vit_tiny", num_classes=10, small_input=True).eval()
    assert m.patch_embed.proj.kernel_size == (4, 4) and m.grid == (8, 8)
    assert m.default_cfg["input_size"] == (3, 32, 32)
    info = m.feature_info[-1]
    assert info["grid"] == (8, 8) and info["reduction"] == 4 and info["num_chs"] == 192
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 65, 192)
        fmap = m.tokens_to_map(tokens)
        assert fmap.shape == (2, 192, 8, 8)
        # patch (i, j) of the map is token 1 + i*8 + j; and the map matches the patch conv's own layout
        assert torch.equal(fmap[:, :, 2, 5], tokens[:, 1 + 2 * 8 + 5])
        conv = m.patch_embed(x)
        seq = torch.cat([tokens[:, :1], conv.flatten(2).transpose(1, 2)], 1)
        assert torch.equal(m.tokens_to_map(seq), conv)
        assert m(x).shape == (2, 10)
    with pytest.raises(CnnkitError, match="grid"):
        m.tokens_to_map(tokens[:, :-3])


def test_feature_info_module_gives_gradcam_gradients():
    """The feature_info module's patch tokens must influence the class logit (else Grad-CAM is blank)."""
    torch.manual_seed(0)
    m = create_model("vit_tiny", num_classes=5, img_size=32, patch_size=8).eval()
    info = m.feature_info[-1]
    store = {}
    h = m.get_submodule(info["module"]).register_forward_hook(lambda mod, i, o: store.setdefault("t", o))
    logits = m(torch.randn(1, 3, 32, 32))
    h.remove()
    grad, = torch.autograd.grad(logits[0, 1], store["t"])
    fmap_grad = m.tokens_to_map(grad, info["grid"])
    assert fmap_grad.shape == (1, 192, 4, 4)
    assert (fmap_grad.abs().sum(1) > 0).all()  # every patch position gets a gradient


def test_other_input_sizes_resample_position_embedding():
    torch.manual_seed(0)
    m = create_model("vit_tiny", num_classes=3, img_size=32, patch_size=8).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 48)).shape == (1, 3)  # grid 8x6 from a nominal 4x4
        pos = m._pos_embed((8, 8))
        assert pos.shape == (1, 65, 192) and torch.equal(pos[:, 0], m.pos_embed[:, 0])
        assert m._pos_embed((4, 4)) is m.pos_embed
    with pytest.raises(CnnkitError, match="patch size"):
        m(torch.randn(1, 3, 30, 32))


def test_interface_cfg_reset_and_errors():
    m = create_model("vit_tiny", num_classes=7, in_chans=1, img_size=32, patch_size=8)
    cfg = m.default_cfg
    assert cfg["architecture"] == "vit_tiny" and cfg["input_size"] == (1, 32, 32) and len(cfg["mean"]) == 1
    assert isinstance(m.get_submodule(cfg["first_conv"]), nn.Conv2d)
    assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
    assert m.patch_embed.proj.in_channels == 1
    m.reset_classifier(4)
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 4) and m.num_classes == 4
    with pytest.raises(CnnkitError):
        create_model("vit_tiny", no_such_knob=1)
    with pytest.raises(CnnkitError, match="multiple"):
        create_model("vit_tiny", img_size=40)


def test_loading_weights_of_another_image_size_resizes_position_embeddings():
    """torchvision at 32 px (2x2 grid) into our model at 64 px (4x4): the converter resizes the position
    embeddings once; the same as our 32 px model resizing them on the fly for a 64 px input."""
    from torchvision.models.vision_transformer import VisionTransformer as TVViT

    torch.manual_seed(0)
    with torch.device("meta"):
        ref = TVViT(image_size=32, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768)
    sd = random_state(ref)
    at32 = load_torchvision_weights(create_model("vit_tiny", num_classes=1000, depth=2, img_size=32), sd).eval()
    at64 = load_torchvision_weights(create_model("vit_tiny", num_classes=1000, depth=2, img_size=64), sd).eval()
    assert at64.pos_embed.shape == (1, 17, 192)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(at64(x), at32(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(at32(x[..., :32, :32]), ref.eval()(x[..., :32, :32]), atol=1e-5, rtol=1e-5)
