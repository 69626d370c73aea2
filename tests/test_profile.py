"""A params profile (params-gpu.yaml) becomes `dvc exp run -S` options only if the merged params are valid,
and the options it prints are ones DVC's own parser and override code read back as the profile's values."""
import copy
import subprocess
import sys

import pytest
import yaml

from stages.common import PARAMS_FILE, load_params
from stages.commands.profile import set_options
from stages.params.tree import flatten, merge
from stages.params import ParamsError, validate
from tests.conftest import ROOT


@pytest.fixture
def gpu_profile() -> dict:
    """A fresh copy of the repository's params-gpu.yaml."""
    with open(ROOT / "params-gpu.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def run_profile(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.commands.profile", str(path)], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


def test_flatten_dots_nested_keys_and_keeps_lists_and_empty_dicts():
    """Lists and {} are values (one -S each), not sections to descend into."""
    tree = {"train": {"learning_rate": 1e-4, "opt": {"betas": [0.9, 0.99], "extra": {}}},
            "lora": {"target_modules": ["all-linear"]}, "top": 1}
    assert flatten(tree) == {"train.learning_rate": 1e-4, "train.opt.betas": [0.9, 0.99], "train.opt.extra": {},
                             "lora.target_modules": ["all-linear"], "top": 1}
    assert flatten({}) == {}


def test_merge_is_nested_and_leaves_base_alone():
    """A profile changes only the keys it names; sibling keys of a section survive, and the caller's params
    are not modified (bench.speed merges the same params.yaml several times)."""
    base = {"train": {"lr": 1.0, "epochs": 3, "opt": {"a": 1, "b": 2}}, "lora": {"rank": 8}, "list": [1, 2]}
    before = copy.deepcopy(base)
    out = merge(base, {"train": {"lr": 2.0, "opt": {"b": 3}}, "list": [3], "new": {"x": 1}})
    assert out == {"train": {"lr": 2.0, "epochs": 3, "opt": {"a": 1, "b": 3}}, "lora": {"rank": 8}, "list": [3],
                   "new": {"x": 1}}
    assert base == before


def test_merge_replaces_a_non_dict_with_a_dict_and_back():
    assert merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert merge({"a": {"b": 2}}, {"a": 1}) == {"a": 1}


def test_gpu_profile_gives_typed_set_options(gpu_profile):
    """One -S per profile key, with its value in a form DVC reads back with the same type."""
    options = set_options(gpu_profile, load_params(PARAMS_FILE))
    assert len(options) == len(flatten(gpu_profile))
    for expected in ("-Strain.use_liger_kernel=true", "-Slora.rank=64", "-Strain.gradient_checkpointing=false",
                     "-Strain.torch_dtype=\"bfloat16\"", "-Sinfer.max_batch_size=512"):
        assert expected in options
    assert all(o.startswith("-S") and "=" in o and not any(c.isspace() for c in o) for o in options)


def test_gpu_profile_merged_on_params_is_valid(gpu_profile):
    validate(merge(load_params(PARAMS_FILE), gpu_profile))


@pytest.mark.parametrize("profile, key", [
    ({"train": {"torch_dtype": "fp8"}}, "train.torch_dtype"),
    ({"lora": {"rank": 0}}, "lora.rank"),
    ({"train": {"learnig_rate": 1e-4}}, "train.learnig_rate"),
    ({"tarin": {"learning_rate": 1e-4}}, "tarin"),
])
def test_invalid_or_unknown_key_is_refused_by_name(params, profile, key):
    """A typo or a bad value in a profile must stop before any -S reaches DVC."""
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        set_options(profile, params)


def test_value_with_a_space_is_refused(params):
    """$(...) splits words: 'Qwen/Qwen3-VL 2B' would reach DVC as two arguments."""
    with pytest.raises(ParamsError, match="model.model_id"):
        set_options({"model": {"model_id": "Qwen/Qwen3-VL 2B"}}, params)


def test_cli_prints_the_options(gpu_profile):
    r = run_profile(ROOT / "params-gpu.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == set_options(gpu_profile, load_params(PARAMS_FILE))
    assert "-Slora.rank=64" in r.stdout.split()


def test_cli_refuses_a_bad_profile_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  torch_dtype: fp8\n", encoding="utf-8")
    r = run_profile(bad)
    assert r.returncode != 0
    assert "train.torch_dtype" in r.stderr and str(bad) in r.stderr
    assert r.stdout == ""


def test_dvc_parses_the_options(gpu_profile):
    """`dvc exp run $(python -m stages.commands.profile params-gpu.yaml)`: the shell splits the output into words (no
    quote removal), and DVC's argument parser must take every word as one --set-param."""
    from dvc.cli import parse_args

    options = set_options(gpu_profile, load_params(PARAMS_FILE))
    args = parse_args(["exp", "run", *options])
    assert args.set_param == [o.removeprefix("-S") for o in options]


def apply_with_dvc(tmp_path, profile: dict) -> dict:
    """params.yaml after DVC's own -S code (Hydra overrides, as `dvc exp run -S` applies them) takes the
    profile's options, read back the way the stages read it."""
    from dvc.utils.hydra import apply_overrides

    params_copy = tmp_path / "params.yaml"
    params_copy.write_text(PARAMS_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    options = set_options(profile, load_params(PARAMS_FILE))
    apply_overrides(params_copy, [o.removeprefix("-S") for o in options])
    return load_params(params_copy)


def test_dvc_applies_the_options_as_the_profile(tmp_path, gpu_profile):
    """The options turn params.yaml into exactly params.yaml merged with the profile: values keep their types
    (bool, int, float, string, list) and no other key changes."""
    profile = merge(gpu_profile, {"lora": {"target_modules": ["all-linear"]}, "data": {"test_labels": ""}})
    assert apply_with_dvc(tmp_path, profile) == merge(load_params(PARAMS_FILE), profile)


def test_dvc_applies_a_small_learning_rate(tmp_path, gpu_profile):
    """A profile for a larger model with a smaller learning rate (3.0e-5) must survive the round trip too: DVC
    writes it as `3e-05`, which plain PyYAML (YAML 1.1) would read as a string (stages.params.load.ParamsLoader)."""
    profile = merge(gpu_profile, {"train": {"learning_rate": 3.0e-5}})
    assert apply_with_dvc(tmp_path, profile)["train"]["learning_rate"] == pytest.approx(3.0e-5)
