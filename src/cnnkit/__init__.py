"""cnnkit: every part of a complete CNN guide, runnable.

    import cnnkit
    model = cnnkit.create_model("resnet18", num_classes=10, in_chans=1)
    cnnkit.list_models("resnet*")
    result = cnnkit.train(data="shapes", epochs=3)
    cnnkit.evaluate(result.run_dir)
    cnnkit.explain.gradcam(model, x)        # the interpretability methods (cnnkit.api.explain draws them)
    cnnkit.export(result.run_dir, format="onnx")   # checked against PyTorch
    cnnkit.bench("fastnet")                 # images/s, share of the matmul peak, time split
    cnnkit.api.report(result.run_dir)       # report.html (`cnnkit.report` is the package that writes it)
    cnnkit.api.plan("shapes-volumes")       # nnU-Net's plan.yaml (`cnnkit.plan` is the package of its rules)
"""
__version__ = "0.1.0"

from .api import TrainConfig, bench, evaluate, export, load_model, predict, summary, train  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .registry import CnnkitError  # noqa: E402


def load_data(*args, **kwargs):
    """Load a data set by name as uint8 tensors (see cnnkit.data.datasets.load_data)."""
    from .data.datasets import load_data as _load

    return _load(*args, **kwargs)


def list_datasets(pattern: str = "*"):
    from .data.datasets import list_datasets as _list

    return _list(pattern)


__all__ = ["create_model", "list_models", "train", "evaluate", "predict", "load_model", "summary", "export", "bench",
           "load_data",
           "list_datasets", "TrainConfig", "CnnkitError", "__version__"]
