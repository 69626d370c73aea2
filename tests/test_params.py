import importlib.util
import json
import re

import pytest

from stages.common import declared_params
from stages.params.tree import project
from stages.params import ParamsError, validate
from tests.conftest import shipped


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

    text = re.sub(r"(?m)^(  learning_rate: )\S+", r"\g<1>3e-05", PARAMS_FILE.read_text(encoding="utf-8"), count=1)
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


@pytest.mark.parametrize("backend", ["vllm", "lmdeploy", "sglang"])
def test_an_infer_backend_that_is_not_installed_is_refused_before_any_stage(params, backend):
    if importlib.util.find_spec(backend):
        pytest.skip(f"{backend} is installed here")
    params["infer"]["infer_backend"] = backend
    with pytest.raises(ParamsError, match=f"infer.infer_backend '{backend}' needs the {backend} package, which this "
                                          "Python .* does not have: pip install") as e:
        validate(params)
    assert "set infer.infer_backend: transformers" in str(e.value)


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


def test_a_missing_key_is_an_error_that_names_it(params):
    """params.yaml is the one source of defaults: the schema fills in nothing."""
    del params["train"]["tuner_type"]
    del params["model"]["builtin"]["init"]
    with pytest.raises(ParamsError) as e:
        validate(params)
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "train.tuner_type: missing from params.yaml" in msg and "model.builtin.init: missing from params.yaml" in msg


def test_the_schema_holds_no_default_values():
    from pydantic_core import PydanticUndefined

    from stages.params import schema

    sections = [c for c in vars(schema).values() if isinstance(c, type) and issubclass(c, schema.Section)]
    defaults = [f"{c.__name__}.{name}" for c in sections for name, field in c.model_fields.items()
                if field.default is not PydanticUndefined or field.default_factory is not None]
    assert not defaults


@pytest.mark.parametrize("changes, message", [
    ({"train.tuner_type": "lora", "train.freeze_parameters": ["model.language_model.embed_tokens"]},
     "train.freeze_parameters ['model.language_model.embed_tokens'] has no effect with train.tuner_type lora"),
    ({"train.freeze_vit": True, "train.vit_lr": 1.0e-4},
     "train.vit_lr has no effect while train.freeze_vit is true (the vision tower is not trained); set "
     "train.freeze_vit: false or train.vit_lr: null"),
    ({"train.freeze_aligner": True, "train.aligner_lr": 1.0e-4},
     "train.aligner_lr has no effect while train.freeze_aligner is true"),
    ({"train.padding_free": True}, "train.padding_free needs train.attn_impl flash_attn"),
    ({"train.tuner_type": "full", "train.quant_bits": 4}, "train.quant_bits needs train.tuner_type 'lora'"),
])
def test_a_knob_that_would_do_nothing_is_refused(params, changes, message):
    from stages.params.tree import set_dotted

    for key, value in changes.items():
        set_dotted(params, key, value, strict=True)
    with pytest.raises(ParamsError, match="1 problem") as e:
        validate(params)
    assert message in str(e.value)


INERT_CASES = [   # (changes against the committed params, the key reported, what the message says to do)
    ({"train.tuner_type": "full", "lora.rank": 32}, "lora.rank changed (8 -> 32) but train.tuner_type is full: LoRA "
     "keys have no effect; set train.tuner_type=lora"),
    ({"train.tuner_type": "full", "lora.target_modules": ["q_proj"]}, "lora.target_modules changed"),
    ({"model.source": "local", "model.local_dir": "/models/q", "model.builtin.hidden_size": 128},
     "model.builtin.hidden_size changed (64 -> 128) but model.source is not builtin"),
    ({"model.model_id": "Qwen/Qwen3-VL-4B-Instruct"}, "model.model_id changed ('Qwen/Qwen3-VL-2B-Instruct' -> "
     "'Qwen/Qwen3-VL-4B-Instruct') but model.source is not modelscope: nothing is downloaded; set model.source=modelscope"),
    ({"model.revision": "abc123"}, "model.revision changed"),
    ({"model.local_dir": "/models/q"}, "model.local_dir changed ('' -> '/models/q') but model.source is not local"),
    ({"data.raw_dir": "data/mine", "synth.num_samples": 100}, "synth.num_samples changed (3200 -> 100) but data.raw_dir "
     "is not data/raw"),
    ({"data.format": "qa_jsonl", "data.columns.id": "key"}, "data.columns.id changed ('id' -> 'key') but data.format is "
     "not table"),
    ({"data.label_map": "map.json"}, "data.label_map changed ('label_map.json' -> 'map.json') but data.format is not "
     "filename"),
    ({"data.label_separator": "-"}, "data.label_separator changed"),
    ({"data.test_labels": "test.csv", "data.test_ratio": 0.2}, "data.test_ratio changed (0.15 -> 0.2) but "
     "data.test_labels is set"),
]


@pytest.mark.parametrize("changes, message", INERT_CASES, ids=[m.split(" ")[0] for _, m in INERT_CASES])
def test_a_change_that_would_do_nothing_is_refused(params, changes, message):
    """Against the committed params.yaml (what `dvc exp run -S` changes): a knob changed where it has no effect."""
    import copy

    from stages.params.tree import set_dotted

    committed = copy.deepcopy(shipped(params))   # the messages name the shipped values
    for key, value in changes.items():
        set_dotted(params, key, value, strict=True)
    validate(params)                                   # valid on its own...
    with pytest.raises(ParamsError, match="1 problem") as e:
        validate(params, committed)                    # ...but the change does nothing
    assert message in str(e.value)
    validate(params, copy.deepcopy(params))            # the same values committed: nothing changed, nothing refused


def test_every_refused_change_is_listed_at_once(params):
    import copy

    committed = copy.deepcopy(shipped(params))
    params["train"]["tuner_type"] = "full"
    params["lora"].update(rank=32, alpha=64)
    params["model"]["model_id"] = "Qwen/Qwen2.5-VL-3B-Instruct"
    with pytest.raises(ParamsError, match="3 problem") as e:
        validate(params, committed)
    assert "lora.rank changed" in str(e.value) and "lora.alpha changed" in str(e.value)


def test_check_params_compares_with_the_committed_params(tmp_path):
    """The stage itself, in a git repository: the committed params.yaml is the reference; outside git only the
    absolute rules apply."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT, SHIPPED

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    from dvc.utils.hydra import apply_overrides

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(str(tmp_path / "params.yaml"), [f"{k}={json.dumps(v)}" for k, v in SHIPPED.items()])
    text = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run(git + argv, cwd=tmp_path, check=True)
    changed = text.replace("tuner_type: lora ", "tuner_type: full ").replace("rank: 8 ", "rank: 32 ")
    assert changed.count("32") > text.count("32")
    (tmp_path / "params.yaml").write_text(changed, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "lora.rank changed (8 -> 32) but train.tuner_type is full" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    shutil.rmtree(tmp_path / ".git")
    r = subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_stage_run_alone_reports_a_params_typo_without_a_traceback(tmp_path):
    """`dvc repro build` runs build without check_params: the stage itself lists the problem and stops."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert "  val_ratio:" in text
    (tmp_path / "params.yaml").write_text(text.replace("  val_ratio:", "  val_ratoi:"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "stages.build"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "data.val_ratoi: unknown key; did you mean 'val_ratio'?" in r.stderr
    assert "data.val_ratio: missing from params.yaml" in r.stderr
    assert not (tmp_path / "data").exists()


def test_the_removed_synth_out_dir_says_where_the_synthetic_data_goes(params):
    """synth.out_dir is gone (the generate stage always writes data/raw): a params.yaml that still has it is told so."""
    params["synth"]["out_dir"] = "data/raw"
    with pytest.raises(ParamsError, match=r"synth.out_dir: removed; the generate stage always writes data/raw"):
        validate(params)


@pytest.mark.parametrize("key, value, message", [
    ("model.revision", "../../outside", "model.revision '../../outside': expected a branch, a tag or a commit id"),
    ("model.revision", "/abs", "model.revision '/abs': expected a branch"),
    ("model.model_id", "../evil", "model.model_id '../evil': expected a ModelScope id owner/name"),
    ("model.model_id", "Qwen/..", "model.model_id 'Qwen/..': expected a ModelScope id owner/name"),
    ("model.model_id", "Qwen3-VL-2B", "model.model_id 'Qwen3-VL-2B': expected a ModelScope id owner/name"),
])
def test_a_hub_name_that_would_leave_the_cache_folder_is_refused(params, key, value, message):
    """The ModelScope client makes folders of the id and the revision: a `../` revision made one outside its cache."""
    from stages.params.tree import set_dotted

    set_dotted(params, key, value, strict=True)
    with pytest.raises(ParamsError) as e:
        validate(params)
    assert message in str(e.value)


@pytest.mark.parametrize("model_id, revision", [("Qwen/Qwen3-VL-2B-Instruct", "master"),
                                                ("test-org/tiny_qwen3.vl", "release/v1.0"), ("a/b", "0123abcd")])
def test_real_hub_names_pass(params, model_id, revision):
    from stages.params.rules import hub_problem

    assert hub_problem(model_id, revision) is None
