"""The schema of params.yaml: every key typed and ranged, checked before any stage does work.

params.yaml is the one source of defaults: the schema holds types, ranges and cross-field rules, no values, so a
key missing from params.yaml is an error that names it; the rules between keys are in rules.py. All problems are reported at once, each naming the key,
what was given and what is valid; an unknown key gets the closest valid key suggested (a typo such as
`lora.rnak`). A knob that would do nothing under the other settings is refused too: absolutely where its value
alone says so (`train.vit_lr` with a frozen vision tower), and as a change against the committed params.yaml
where only the change says so (`lora.rank` changed while `train.tuner_type` is full).
"""
from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stages.params.rules import REMOVED, inert_changes, rule_problems

# The input formats: format `<name>` is read by stages/dataset/formats/<name>.py, so a new format is its module and
# its name here; `data.format: auto` asks them in this order whether a file is theirs (table if none).
FORMATS = ("filename", "table", "swift_jsonl", "qa_jsonl")


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
    format: Literal[(*FORMATS, "auto")]
    raw_dir: str = Field(min_length=1)
    labels: str = Field(min_length=1)
    test_labels: str
    columns: Columns
    label_map: str
    label_separator: str
    prompt: str = Field(min_length=1)
    system: str
    system_file: str
    answer_kind: Literal["auto", "json", "text"]
    on_error: Literal["fail", "skip"]
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
    examples: int = Field(ge=0, le=50)


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
    if err["type"] == "extra_forbidden" and key in REMOVED:
        return f"{key}: removed; {REMOVED[key]}"
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
    problems += rule_problems(params)
    if reference is not None:
        problems += inert_changes(params, reference)
    if problems:
        raise ParamsError(f"params.yaml has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return params


