"""Every figure writer produces a PNG."""
import torch

from cnnkit.explain import plot


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written(tmp_path):
    imgs = torch.rand(2, 3, 16, 16)
    heat = torch.rand(2, 16, 16)
    paths = [
        plot.save_heatmaps(tmp_path / "h.png", imgs, {"gradcam": heat, "guided": torch.randn(2, 3, 16, 16)},
                           mean=[0, 0, 0], std=[1, 1, 1]),
        plot.save_grid(tmp_path / "g.png", torch.randn(5, 1, 8, 8)),
        plot.save_filters(tmp_path / "f.png", torch.rand(6, 4, 3, 3)),
        plot.save_feature_maps(tmp_path / "m.png", torch.randn(10, 4, 4)),
        plot.save_inversions(tmp_path / "sub" / "i.png", imgs[0], [
            dict(layer="a", reconstruction=imgs[:1], pixel_error=0.1),
            dict(layer="b", reconstruction=imgs[1], pixel_error=0.5)]),
        plot.save_erf(tmp_path / "e.png", heat[0], box=(-2.0, 3.0, 10.0, 20.0)),
        plot.save_curves(tmp_path / "c.png", dict(
            fraction=torch.linspace(0, 1, 5), deletion=torch.rand(2, 5), deletion_auc=torch.rand(2),
            insertion=torch.rand(2, 5), insertion_auc=torch.rand(2), random_deletion=torch.rand(2, 5),
            random_deletion_auc=torch.rand(2))),
    ]
    assert all(is_png(p) for p in paths)
