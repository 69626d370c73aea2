import pytest

from stages.common import declared_params, project
from stages.schema import ParamsError, validate


def test_repository_params_are_valid(params):
    validate(params)


def test_all_problems_reported_at_once_with_valid_values(params):
    params["lora"]["rank"] = 0
    params["lora"]["rnak"] = 8
    params["model"]["source"] = "huggingface"
    params["train"]["learning_rate"] = "fast"
    with pytest.raises(ParamsError) as e:
        validate(params)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "lora.rank: Input should be greater than 0, got 0" in msg
    assert "lora.rnak: unknown key; did you mean 'rank'?" in msg
    assert "model.source: Input should be 'builtin', 'local' or 'modelscope', got 'huggingface'" in msg
    assert "train.learning_rate: Input should be a valid number, got 'fast'" in msg


def test_exponent_without_a_dot_is_a_float(tmp_path):
    """`learning_rate: 1e-4` (how people write it, and how `dvc exp run -S` writes 3e-05) is a float, as in
    YAML 1.2 and DVC, not the string PyYAML's YAML 1.1 rules make of it."""
    from stages.common import PARAMS_FILE, load_params

    text = PARAMS_FILE.read_text(encoding="utf-8").replace("learning_rate: 1.0e-3", "learning_rate: 3e-05")
    assert "learning_rate: 3e-05" in text
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert load_params(tmp_path / "params.yaml")["train"]["learning_rate"] == 3e-05


def test_cross_field_rules(params):
    params["model"]["source"] = "local"
    params["data"]["val_ratio"] = 0.5
    params["data"]["test_ratio"] = 0.5
    with pytest.raises(ParamsError, match="model.local_dir must name a model directory") as e:
        validate(params)
    assert "val_ratio + data.test_ratio must be < 1" in str(e.value)


def test_every_stage_declares_only_existing_keys(params):
    """Each stage's declared params exist in params.yaml (so stage_params never hides a typo)."""
    import yaml
    from tests.conftest import ROOT
    stages = yaml.safe_load(open(ROOT / "dvc.yaml"))["stages"]
    for name in stages:
        project(params, declared_params(name))


def test_project_returns_only_declared_keys():
    p = {"a": {"b": 1, "c": 2}, "d": 3}
    assert project(p, ["a.b"]) == {"a": {"b": 1}}
    with pytest.raises(KeyError):
        project(p, ["a.x"])
