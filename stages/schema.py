"""The schema of params.yaml: every key typed and ranged, checked before any stage does work.

All problems are reported at once, each naming the key, what was given and what is valid;
an unknown key gets the closest valid key suggested (a typo such as `lora.rnak`).
"""
from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PosInt = Field(gt=0)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Builtin(Section):
    hidden_size: int = Field(64, gt=0, multiple_of=8)
    num_hidden_layers: int = Field(2, gt=0)
    vision_depth: int = Field(2, gt=0)
    vision_hidden_size: int = Field(64, gt=0, multiple_of=8)
    init: Literal["qwen", "fan_in"] = "qwen"
    pretrain_vision_steps: int = Field(0, ge=0)


class Model(Section):
    source: Literal["builtin", "local", "modelscope"]
    model_id: str
    revision: str = "master"
    local_dir: str = ""
    model_type: Literal["qwen3_vl", "qwen2_5_vl", "qwen2_vl"]
    template: str = ""
    image_max_token_num: int = Field(gt=0)
    trust_remote_code: bool = False
    builtin: Builtin = Builtin()

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "local" and not self.local_dir:
            raise ValueError("model.source is 'local', so model.local_dir must name a model directory")
        if self.source == "builtin" and self.model_type not in ("qwen3_vl", "qwen2_vl"):
            raise ValueError("model.source 'builtin' builds a tiny Qwen3-VL or Qwen2-VL: model.model_type must be "
                             f"'qwen3_vl' or 'qwen2_vl', got {self.model_type!r}")
        if self.model_type == "qwen2_vl" and self.template != "qwen2_vl":
            raise ValueError("model.model_type 'qwen2_vl' needs model.template 'qwen2_vl' (ms-swift would otherwise "
                             f"not tell it from qvq), got {self.template!r}")
        return self


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
    id: str = "id"
    images: list[str] = Field(min_length=1)
    answer: list[str] = Field(min_length=1)
    question: str = ""
    system: str = ""


class Data(Section):
    format: Literal["table", "filename", "qa_jsonl", "swift_jsonl", "auto"] = "table"
    raw_dir: str = Field(min_length=1)
    labels: str = Field(min_length=1)
    test_labels: str = ""
    columns: Columns
    label_map: str = "label_map.json"
    label_separator: str = "_"
    prompt: str = Field(min_length=1)
    system: str = ""
    system_file: str = ""
    stratify: str = ""
    val_ratio: float = Field(ge=0, lt=1)
    test_ratio: float = Field(gt=0, lt=1)
    imbalance_ratio: float = Field(10.0, ge=1)

    @model_validator(mode="after")
    def _ratios(self):
        if self.val_ratio + self.test_ratio >= 1:
            raise ValueError(f"data.val_ratio + data.test_ratio must be < 1 (leave data to train on), "
                             f"got {self.val_ratio} + {self.test_ratio}")
        if self.system and self.system_file:
            raise ValueError("data.system and data.system_file are both set; set one of them")
        if self.format == "table" and self.stratify and self.stratify not in self.columns.answer:
            raise ValueError(f"data.stratify {self.stratify!r} must be one of data.columns.answer "
                             f"({', '.join(self.columns.answer)}) for format table")
        return self


class Lora(Section):
    rank: int = Field(gt=0)
    alpha: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)
    use_dora: bool = False
    use_rslora: bool = False
    modules_to_save: list[str] = []
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


class Train(Section):
    freeze_vit: bool
    freeze_aligner: bool
    freeze_parameters: list[str] = []
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
    tuner_type: Literal["lora", "full"] = "lora"
    vit_lr: float | None = Field(None, gt=0, lt=1)
    aligner_lr: float | None = Field(None, gt=0, lt=1)
    quant_bits: Literal[0, 4, 8] = 0
    early_stop_interval: int = Field(0, ge=0)
    report_to: Literal["none", "tensorboard", "wandb", "swanlab"] = "none"
    resume: bool = False
    nproc_per_node: int = Field(1, ge=1)
    deepspeed: Literal["", "zero2", "zero3"] = ""
    use_liger_kernel: bool = False
    attn_impl: Literal["sdpa", "eager", "flash_attn", "flash_attention_3"] = "sdpa"
    padding_free: bool = False
    torch_compile: bool = False

    @model_validator(mode="after")
    def _padding_free_needs_flash(self):
        if self.padding_free and not self.attn_impl.startswith("flash"):
            raise ValueError("train.padding_free needs train.attn_impl flash_attn or flash_attention_3 (flash-attn "
                             f"installed); got attn_impl {self.attn_impl!r}")
        return self

    @model_validator(mode="after")
    def _qlora_is_lora(self):
        if self.quant_bits and self.tuner_type != "lora":
            raise ValueError("train.quant_bits needs train.tuner_type 'lora' (QLoRA trains adapters on a quantized base)")
        return self


class Infer(Section):
    infer_backend: Literal["transformers", "vllm", "sglang", "lmdeploy"]
    max_batch_size: int = Field(gt=0)
    max_new_tokens: int = Field(gt=0, le=8192)


class Score(Section):
    fields: dict[str, Literal["categorical", "numeric", "text"]] = {}
    tolerance: dict[str, Annotated[float, Field(ge=0)]] = {}
    max_classes: int = Field(10, gt=1)
    worst_n: int = Field(20, ge=0)

    @model_validator(mode="after")
    def _tolerance_on_numeric(self):
        bad = [f for f in self.tolerance if self.fields and self.fields.get(f) != "numeric"]
        if bad:
            raise ValueError(f"score.tolerance: {', '.join(bad)} not numeric in score.fields; numeric fields: "
                             f"{', '.join(f for f, t in self.fields.items() if t == 'numeric') or 'none'}")
        return self


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
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(Params, loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{key}: unknown key; {hint}valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"{key}: missing"
    given = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}, got {given!r}" if err["type"] != "value_error" else msg


def validate(params: dict) -> dict:
    """Check the whole params dict; return it with defaults filled in, or raise ParamsError listing all problems."""
    try:
        return Params.model_validate(params).model_dump()
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors()]
        raise ParamsError(f"params.yaml has {len(problems)} problem(s):\n  " + "\n  ".join(problems)) from None


def main() -> None:
    """Stage `check_params`: reruns on any change to params.yaml, so a typo in a key that no stage
    declares (`lora.rnak`) still fails `dvc repro` instead of being silently ignored."""
    import sys

    from stages.common import PARAMS_FILE, read_yaml, setup_logging

    setup_logging()
    try:
        validate(read_yaml(PARAMS_FILE) or {})
    except ParamsError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
