import pytest

from cnnkit.config import RECIPES, TrainConfig, parse_sets, resolve
from cnnkit.registry import CnnkitError


def test_defaults_are_valid():
    cfg = resolve({})
    # resolving also states the task (from the model) and the monitor (from the task)
    assert cfg == TrainConfig(task="classify", monitor="val_acc").validate()


def test_the_task_and_its_recipe_come_from_the_model_under_the_users_choices():
    det = resolve({"model": "yolo_n"})
    assert det.task == "detect" and det.monitor == "val_map" and det.optimizer == "adamw"
    assert resolve({"model": "yolo_n", "lr": 0.01, "monitor": "val_map50"}).lr == 0.01
    assert resolve({"model": "chexnet"}).monitor == "val_auroc"
    assert resolve({"model": "fastnet", "task": "multilabel"}).task == "multilabel"
    with pytest.raises(CnnkitError, match="unknown task"):
        resolve({"task": "detekt"})


def test_precedence_defaults_recipe_file_options(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("recipe: seed\nlr: 0.01\nepochs: 3\n")
    cfg = resolve({"epochs": 5}, config_file=str(f))
    assert cfg.model == "seed_cnn" and cfg.optimizer == "adam"  # from the recipe
    assert cfg.lr == 0.01  # the file over the recipe
    assert cfg.epochs == 5  # options over the file


def test_seed_recipe_is_the_guides():
    r = RECIPES["seed"]
    assert (r["batch_size"], r["optimizer"], r["lr"], r["epochs"], r["image_size"], r["normalize"]) == \
        (64, "adam", 1e-3, 10, 32, "half")


@pytest.mark.parametrize("opts, msg", [
    ({"lrr": 0.1}, "Did you mean 'lr'"),
    ({"optimizer": "adma"}, "Did you mean 'adam'"),
    ({"lr": -1.0}, "lr must be a positive"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"val": "1.5"}, "between 0 and 1"),
    ({"val": "train"}, "'test' or a fraction"),
    ({"ema": 1.5}, "ema is a decay"),
    ({"recipe": "sed"}, "Did you mean 'seed'"),
    ({"channels": 2}, "channels must be 1 or 3"),
])
def test_bad_values_are_clear_errors(opts, msg):
    with pytest.raises(CnnkitError, match=msg):
        resolve(opts)


def test_file_errors(tmp_path):
    with pytest.raises(CnnkitError, match="not found"):
        resolve({}, config_file=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(CnnkitError, match="not valid YAML"):
        resolve({}, config_file=str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("batchsize: 3\n")
    with pytest.raises(CnnkitError, match="batch_size"):
        resolve({}, config_file=str(typo))


def test_set_parses_yaml_values():
    d = parse_sets(["lr=0.5", "model_args={drop_rate: 0.2}", "compile=true"])
    cfg = resolve(d)
    assert cfg.lr == 0.5 and cfg.model_args == {"drop_rate": 0.2} and cfg.compile is True
    with pytest.raises(CnnkitError, match="KEY=VALUE"):
        parse_sets(["lr"])
    with pytest.raises(CnnkitError, match="expects int"):
        resolve({"epochs": "many"})
