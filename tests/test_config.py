from pathlib import Path

import pytest
import yaml

from wsi_seg.config import TrainConfig, dump_config, load_train_config, parse_train_config
from wsi_seg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, data, name="x.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _minimal(**extra):
    return {"classes": [{"name": "bg"}, {"name": "tumour", "color": [200, 0, 0]}], **extra}


@pytest.mark.parametrize("name", ["biopsy.yaml", "demo.yaml"])
def test_shipped_recipes_validate(name):
    config = load_train_config(REPO / "configs" / name)
    assert len(config.classes) == 8 and config.model.name == "espnet"
    assert config.stage_model(0) == "espnet_c" and config.stage_model(len(config.stages) - 1) == "espnet"


def test_paper_defaults():
    config = parse_train_config(_minimal())
    assert (config.optim.lr, config.optim.weight_decay) == (5e-4, 5e-4)
    assert (config.optim.lr_step_epochs, config.optim.lr_gamma) == (100, 0.5)
    assert config.optim.class_weights == "enet" and config.optim.enet_c == 1.02 and config.optim.ignore_index == 255
    assert config.stage_model(0) == "espnet" and config.stage_name(0) == "stage1"


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, _minimal(data={"val_fractoin": 0.2}))
    with pytest.raises(ConfigError, match=r"x\.yaml: data\.val_fractoin: unknown key"):
        load_train_config(path)


def test_wrong_type_is_named(tmp_path):
    path = _write(tmp_path, _minimal(data={"val_fraction": "lots"}))
    with pytest.raises(ConfigError, match=r"x\.yaml: data\.val_fraction: Input should be a valid number"):
        load_train_config(path)
    path = _write(tmp_path, _minimal(stages=[{"epochs": -1}]))
    with pytest.raises(ConfigError, match=r"stages\.0\.epochs: Input should be greater than or equal to 0"):
        load_train_config(path)


def test_model_and_stage_checks():
    with pytest.raises(ConfigError, match="model.name: unknown model 'resnet'"):
        parse_train_config(_minimal(model={"name": "resnet"}))
    with pytest.raises(ConfigError, match="stages.0: model 'espnet' has no hyper-parameter"):
        parse_train_config(_minimal(model={"hparams": {"depth": 3}}))
    with pytest.raises(ConfigError, match="last stage trains the final model"):
        parse_train_config(_minimal(stages=[{"model": "espnet"}, {"model": "espnet_c"}]))
    with pytest.raises(ConfigError, match="classes: class names must be unique"):
        parse_train_config({"classes": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="classes"):
        parse_train_config({})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_train_config(_write(tmp_path, "classes: [\n  - {name: a\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(_write(tmp_path, "- a\n- b\n"))


def test_overrides_apply_before_validation(tmp_path):
    path = _write(tmp_path, _minimal(stages=[{"model": "espnet_c", "epochs": 5}, {"epochs": 7}]))
    config = load_train_config(path, store="s.zarr", out="runs/x", epochs=2, seed=9, device="cpu", workers=0,
                               batch_size=3, max_minutes=1.5, threads=1)
    assert [s.epochs for s in config.stages] == [2, 2]
    assert config.data.store == Path("s.zarr") and config.output.dir == Path("runs/x")
    assert (config.run.seed, config.run.device, config.run.max_minutes, config.run.threads) == (9, "cpu", 1.5, 1)
    assert (config.data.workers, config.data.batch_size) == (0, 3)
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_train_config(path, batch_size=0)


def test_dump_round_trip():
    config = parse_train_config(_minimal(stages=[{"model": "espnet_c", "epochs": 1}, {"lr": 1e-4}]))
    again = parse_train_config(yaml.safe_load(dump_config(config)))
    assert again == config and isinstance(again, TrainConfig)
    assert config.class_colors()[1] == [200, 0, 0]
