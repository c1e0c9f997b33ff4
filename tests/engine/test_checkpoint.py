import json

import pytest
import torch

from cnnkit.engine import checkpoint as ck
from cnnkit.registry import CnnkitError


def test_round_trip_weights_meta_and_optimizer_state(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    ck.save_checkpoint(tmp_path / "last", model.state_dict(), {"model": "x"}, {"optimizer": opt.state_dict(), "step": 7})
    folder = ck.resolve_checkpoint(tmp_path, prefer="last")
    w = ck.load_weights(folder)
    assert all(torch.equal(w[k], v) for k, v in model.state_dict().items())
    state = ck.load_state(folder)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    opt2.load_state_dict(state["optimizer"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.01
    for k in a["state"]:
        for name, t in a["state"][k].items():
            assert torch.equal(t, b["state"][k][name])
    assert state["step"] == 7
    # nothing pickled: the state's structure is plain JSON
    json.loads((folder / ck.STATE_J).read_text())


def test_flatten_keeps_types():
    obj = {"a": (1, 2.5, None), 3: [torch.ones(2), "s"], "t": True}
    tensors, skel = ck.flatten_state(obj)
    back = ck.unflatten_state(json.loads(json.dumps(skel)), tensors)
    assert back["a"] == (1, 2.5, None) and back["t"] is True and back[3][1] == "s"
    assert torch.equal(back[3][0], torch.ones(2))


def test_overwrite_is_atomic_and_old_copy_is_found(tmp_path):
    ck.save_checkpoint(tmp_path / "best", {"w": torch.zeros(2)}, {"epoch": 1})
    ck.save_checkpoint(tmp_path / "best", {"w": torch.ones(2)}, {"epoch": 2})
    assert ck.load_meta(ck.resolve_checkpoint(tmp_path))["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no temporary folders left
    # a crash between the two renames leaves only .best.old: it is still found
    (tmp_path / "best").rename(tmp_path / ".best.old")
    assert ck.load_meta(ck.resolve_checkpoint(tmp_path))["epoch"] == 2
    assert ck.load_meta(ck.resolve_checkpoint(tmp_path / "best"))["epoch"] == 2  # named directly, too
    assert ck.resolve_checkpoint(tmp_path / ".best.old" / ck.META) == tmp_path / ".best.old"  # a file inside


def test_corrupt_or_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CnnkitError, match="no run or checkpoint"):
        ck.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="holds no checkpoint"):
        ck.resolve_checkpoint(tmp_path / "empty")
    ck.save_checkpoint(tmp_path / "c", {"w": torch.zeros(2)}, {"epoch": 1})
    (tmp_path / "c" / ck.WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CnnkitError, match="corrupt"):
        ck.load_weights(tmp_path / "c")
    (tmp_path / "c" / ck.META).write_text("{")
    with pytest.raises(CnnkitError, match="unreadable"):
        ck.load_meta(tmp_path / "c")


def test_load_into_names_the_mismatch():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 5)
    with pytest.raises(CnnkitError, match="does not fit this model: 0 missing, 0 unexpected, 2 of another shape"):
        ck.load_into(b, a.state_dict(), "checkpoint X")
