"""Model analysis (guide §2–3): per-layer shapes, parameters, MACs/FLOPs, exact receptive fields
and activation memory, with the guide's formulas filled in (`cnnkit summary`).

    s = summary(model, (3, 224, 224))
    print(s.render("table", explain=True))       # or "markdown" / "json"
    receptive_field(model, (3, 224, 224))        # {layer: (size, jump, start)}
    empirical_receptive_field(model, (3, 224, 224))  # the same, measured with autograd
"""
from .empirical import empirical_receptive_field
from .flops import MacCounter, count_macs
from .render import FORMATS, human_bytes, human_count
from .summary import LayerRow, ModelSummary, receptive_field, summary

__all__ = [
    "summary", "receptive_field", "empirical_receptive_field", "ModelSummary", "LayerRow",
    "MacCounter", "count_macs", "FORMATS", "human_bytes", "human_count",
]
