"""The schema of params.yaml: every key typed and ranged, checked before any stage does work.

params.yaml is the one source of defaults: the schema holds types, ranges and cross-field rules, no values, so a
key missing from params.yaml is an error that names it. All problems are reported at once, each naming the key,
what was given and what is valid; an unknown key gets the closest valid key suggested (a typo such as
`lora.rnak`). A knob that would do nothing under the other settings is refused too: absolutely where its value
alone says so (`train.vit_lr` with a frozen vision tower), and as a change against the committed params.yaml
where only the change says so (`lora.rank` changed while `train.tuner_type` is full).
"""
from __future__ import annotations

import difflib
import subprocess
from typing import Annotated, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Builtin(Section):
    hidden_size: int = Field(gt=0, multiple_of=8)
    num_hidden_layers: int = Field(gt=0)
    vision_depth: int = Field(gt=0)
    vision_hidden_size: int = Field(gt=0, multiple_of=8)
    init: Literal["qwen", "fan_in"]
    pretrain_vision_steps: int = Field(ge=0)


class Model(Section):
    source: Literal["builtin", "local", "modelscope"]
    model_id: str
    revision: str
    local_dir: str
    model_type: Literal["qwen3_vl", "qwen2_5_vl", "qwen2_vl"]
    template: str
    image_max_token_num: int = Field(gt=0)
    trust_remote_code: bool
    builtin: Builtin



class Synth(Section):
    out_dir: str
    num_samples: int = Field(gt=0)
    image_size: int = Field(ge=32, le=2048)
    max_distance: int = Field(gt=0)
    focus_sigma: float = Field(ge=0)
    blur_per_step: float = Field(gt=0)
    noise_std: float = Field(ge=0, le=1)
    full_well: int = Field(ge=0)
    brightness_jitter: float = Field(ge=0, lt=1)


class Columns(Section):
    id: str
    images: list[str] = Field(min_length=1)
    answer: list[str] = Field(min_length=1)
    question: str
    system: str


class Data(Section):
    format: Literal["table", "filename", "qa_jsonl", "swift_jsonl", "auto"]
    raw_dir: str = Field(min_length=1)
    labels: str = Field(min_length=1)
    test_labels: str
    columns: Columns
    label_map: str
    label_separator: str
    prompt: str = Field(min_length=1)
    system: str
    system_file: str
    stratify: str
    val_ratio: float = Field(ge=0, lt=1)
    test_ratio: float = Field(gt=0, lt=1)
    imbalance_ratio: float = Field(ge=1)



class Lora(Section):
    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)
    use_dora: bool
    use_rslora: bool
    modules_to_save: list[str]
    dtype: Literal["float32", "bfloat16", "float16"] | None


class Train(Section):
    freeze_vit: bool
    freeze_aligner: bool
    freeze_parameters: list[str]
    num_train_epochs: float = Field(gt=0)
    learning_rate: float = Field(gt=0, lt=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"]
    warmup_ratio: float = Field(ge=0, lt=1)
    per_device_train_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(gt=0)
    max_length: int = Field(gt=0)
    torch_dtype: Literal["float32", "bfloat16", "float16"]
    gradient_checkpointing: bool
    logging_steps: int = Field(gt=0)
    eval_steps: int = Field(gt=0)
    dataloader_num_workers: int = Field(ge=0)
    tuner_type: Literal["lora", "full"]
    vit_lr: float | None = Field(gt=0, lt=1)
    aligner_lr: float | None = Field(gt=0, lt=1)
    quant_bits: Literal[0, 4, 8]
    early_stop_interval: int = Field(ge=0)
    report_to: Literal["none", "tensorboard", "wandb", "swanlab"]
    resume: bool
    nproc_per_node: int = Field(ge=1)
    deepspeed: Literal["", "zero2", "zero3"]
    use_liger_kernel: bool
    attn_impl: Literal["sdpa", "eager", "flash_attn", "flash_attention_3"]
    padding_free: bool
    torch_compile: bool




class Infer(Section):
    infer_backend: Literal["transformers", "vllm", "sglang", "lmdeploy"]
    max_batch_size: int = Field(gt=0)
    max_new_tokens: int = Field(gt=0, le=8192)


class Score(Section):
    fields: dict[str, Literal["categorical", "numeric", "text"]]
    tolerance: dict[str, Annotated[float, Field(ge=0)]]
    max_classes: int = Field(gt=1)
    worst_n: int = Field(ge=0)



class Params(Section):
    seed: int = Field(ge=0)
    model: Model
    synth: Synth
    data: Data
    lora: Lora
    train: Train
    infer: Infer
    score: Score


class ParamsError(ValueError):
    """params.yaml does not fit the schema; the message lists every problem."""


def _rule_problems(p: dict) -> list[str]:
    """Cross-field rules on the raw params: each yields its problem or nothing. A rule whose keys are missing or
    mistyped is skipped: the schema already reports those keys."""
    m, d, t, s = (p.get(k) if isinstance(p.get(k), dict) else {} for k in ("model", "data", "train", "score"))
    rules: list[Callable[[], str | None]] = [
        lambda: "model.source is 'local', so model.local_dir must name a model directory"
        if m["source"] == "local" and not m["local_dir"] else None,
        lambda: "model.source 'builtin' builds a tiny Qwen3-VL or Qwen2-VL: model.model_type must be 'qwen3_vl' or "
                f"'qwen2_vl', got {m['model_type']!r}"
        if m["source"] == "builtin" and m["model_type"] not in ("qwen3_vl", "qwen2_vl") else None,
        lambda: "model.model_type 'qwen2_vl' needs model.template 'qwen2_vl' (ms-swift would otherwise not tell it "
                f"from qvq), got {m['template']!r}"
        if m["model_type"] == "qwen2_vl" and m["template"] != "qwen2_vl" else None,
        lambda: f"data.val_ratio + data.test_ratio must be < 1 (leave data to train on), got {d['val_ratio']} + "
                f"{d['test_ratio']}" if d["val_ratio"] + d["test_ratio"] >= 1 else None,
        lambda: "data.system and data.system_file are both set; set one of them"
        if d["system"] and d["system_file"] else None,
        lambda: f"data.stratify {d['stratify']!r} must be one of data.columns.answer "
                f"({', '.join(d['columns']['answer'])}) for format table"
        if d["format"] == "table" and d["stratify"] and d["stratify"] not in d["columns"]["answer"] else None,
        lambda: "train.padding_free needs train.attn_impl flash_attn or flash_attention_3 (flash-attn installed); "
                f"got attn_impl {t['attn_impl']!r}" if t["padding_free"] and not t["attn_impl"].startswith("flash")
        else None,
        lambda: "train.quant_bits needs train.tuner_type 'lora' (QLoRA trains adapters on a quantized base)"
        if t["quant_bits"] and t["tuner_type"] != "lora" else None,
        lambda: f"train.freeze_parameters {t['freeze_parameters']} has no effect with train.tuner_type lora (LoRA "
                "keeps every base weight frozen; ms-swift reads it only when training in full); set "
                "train.freeze_parameters: [] or train.tuner_type: full"
        if t["tuner_type"] == "lora" and t["freeze_parameters"] else None,
        *(lambda part=part: f"train.{part}_lr has no effect while train.freeze_{part} is true (the "
                            f"{'vision tower' if part == 'vit' else 'aligner'} is not trained); set "
                            f"train.freeze_{part}: false or train.{part}_lr: null"
          for part in ("vit", "aligner") if t.get(f"{part}_lr") is not None and t.get(f"freeze_{part}")),
        lambda: f"score.tolerance: {', '.join(bad)} not numeric in score.fields; numeric fields: "
                f"{', '.join(f for f, k in s['fields'].items() if k == 'numeric') or 'none'}"
        if (bad := [f for f in s["tolerance"] if s["fields"] and s["fields"].get(f) != "numeric"]) else None,
    ]
    problems = []
    for rule in rules:
        try:
            if problem := rule():
                problems.append(problem)
        except (KeyError, TypeError, AttributeError):
            continue
    return problems


# Keys that do nothing unless another key says so: (dotted key or section prefix, when they do nothing, what to do).
INERT: list[tuple[str, Callable[[dict], bool], str]] = [
    ("lora.", lambda p: p["train"]["tuner_type"] == "full",
     "train.tuner_type is full: LoRA keys have no effect; set train.tuner_type=lora"),
    ("model.builtin.", lambda p: p["model"]["source"] != "builtin",
     "model.source is not builtin: the tiny model's shape has no effect; set model.source=builtin"),
    ("model.model_id", lambda p: p["model"]["source"] != "modelscope",
     "model.source is not modelscope: nothing is downloaded; set model.source=modelscope"),
    ("model.revision", lambda p: p["model"]["source"] != "modelscope",
     "model.source is not modelscope: nothing is downloaded; set model.source=modelscope"),
    ("model.local_dir", lambda p: p["model"]["source"] != "local",
     "model.source is not local: model.local_dir is not read; set model.source=local"),
    ("synth.", lambda p: p["data"]["raw_dir"] != p["synth"]["out_dir"],
     "data.raw_dir is not synth.out_dir: the synthetic data is not trained on; set data.raw_dir to synth.out_dir"),
    ("data.columns.", lambda p: p["data"]["format"] not in ("table", "auto"),
     "data.format is not table: the column roles are not read"),
    ("data.label_map", lambda p: p["data"]["format"] not in ("filename", "auto"),
     "data.format is not filename: the label map is not read"),
    ("data.label_separator", lambda p: p["data"]["format"] not in ("filename", "auto"),
     "data.format is not filename: file names are not parsed"),
    ("data.test_ratio", lambda p: bool(p["data"]["test_labels"]),
     "data.test_labels is set: the test set is that file, nothing is split off"),
]


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def inert_changes(params: dict, reference: dict) -> list[str]:
    """Keys changed against `reference` (the committed params.yaml) that do nothing under the other settings."""
    new, old = _flat(params), _flat(reference)
    problems = []
    for key in (k for k in new if k in old and new[k] != old[k]):
        for prefix, idle, advice in INERT:
            if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
                try:
                    if idle(params):
                        problems.append(f"{key} changed ({old[key]!r} -> {new[key]!r}) but {advice}")
                except (KeyError, TypeError):
                    pass
                break
    return problems


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(err: dict) -> str:
    loc = tuple(p for p in err["loc"])
    key = ".".join(str(p) for p in loc) or "params.yaml"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(Params, loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{key}: unknown key; {hint}valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{key}: missing from params.yaml; every key is set there (it is the one source of defaults)"
    given = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}, got {given!r}" if err["type"] != "value_error" else msg


def validate(params: dict, reference: dict | None = None) -> dict:
    """Check the whole params dict (and, given the committed `reference`, what changed against it); return it as
    validated, or raise ParamsError listing all problems."""
    problems = []
    try:
        Params.model_validate(params)
    except ValidationError as e:
        problems += [_describe(err) for err in e.errors()]
    problems += _rule_problems(params)
    if reference is not None:
        problems += inert_changes(params, reference)
    if problems:
        raise ParamsError(f"params.yaml has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return params


def committed_params(cwd=None) -> dict | None:
    """params.yaml as committed at git HEAD (the baseline of `dvc exp run -S ...`), None outside a git repository."""
    import yaml

    from stages.common import ROOT, ParamsLoader

    try:
        text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=cwd or ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    try:
        return yaml.load(text, Loader=ParamsLoader) or None
    except yaml.YAMLError:
        return None


def main() -> None:
    """Stage `check_params`: reruns on any change to params.yaml, so a typo in a key that no stage
    declares (`lora.rnak`) still fails `dvc repro` instead of being silently ignored, and so does a knob
    changed where it has no effect."""
    import sys

    from stages.common import PARAMS_FILE, read_yaml, setup_logging

    setup_logging()
    try:
        validate(read_yaml(PARAMS_FILE) or {}, committed_params())
    except ParamsError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
