import math

import pytest
import torch

from cnnkit.engine.optim import EMA, build_optimizer, lr_factor, param_groups
from cnnkit.registry import CnnkitError


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 2))


def test_weight_decay_skips_norms_and_biases():
    decay, no_decay = param_groups(_model(), 5e-4)
    assert [p.ndim for p in decay["params"]] == [4, 2]
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert no_decay["weight_decay"] == 0


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("nesterov", torch.optim.SGD),
                                       ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_optimizers(name, cls):
    opt = build_optimizer(name, _model(), 0.1, 1e-4)
    assert isinstance(opt, cls)
    if name == "nesterov":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer():
    with pytest.raises(CnnkitError, match="Did you mean 'adam'"):
        build_optimizer("adan", _model(), 0.1)


def test_schedules():
    total, spe = 100, 10
    one = [lr_factor("onecycle", s, total, spe) for s in range(total)]
    assert max(one) == 1.0 and one.index(1.0) == 24 and one[-1] < 0.02  # up for 25 %, then down to ~0
    cos = [lr_factor("cosine", s, total, spe, warmup_steps=10) for s in range(total)]
    assert cos[0] == pytest.approx(0.1) and cos[10] == 1.0 and cos[55] == pytest.approx(0.5, abs=0.02)
    assert lr_factor("step", 29, total, spe, step_size=3) == 1.0
    assert lr_factor("step", 30, total, spe, step_size=3, gamma=0.1) == pytest.approx(0.1)
    assert lr_factor("none", 50, total, spe) == 1.0
    assert all(math.isfinite(v) and v >= 0 for v in one + cos)


def test_ema_matches_the_formula():
    model = _model()
    ema = EMA(model, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            expect = 0.9 * before[k] + 0.1 * model.state_dict()[k]
            assert torch.allclose(v, expect, atol=1e-6), k
