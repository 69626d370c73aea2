"""Rules between keys of params.yaml, which the per-key schema (stages/params/schema.py) cannot state.

Absolute rules: a value that cannot work or does nothing given another key (`train.vit_lr` with a frozen vision
tower). Inert changes: a key changed against the committed params.yaml while another key makes it do nothing
(`lora.rank` changed while `train.tuner_type` is full); only the change says so, so these need the reference.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from typing import Callable

from stages.params.tree import flatten

SYNTH_DIR = "data/raw"   # the generate stage's output. Not a param: `dvc exp run` checks a stage's outputs out
                          # (force) before it runs anything, and deleted whatever folder such a param named
REMOVED = {"synth.out_dir": f"the generate stage always writes {SYNTH_DIR}; delete the key (your data: data.raw_dir)"}


HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")   # one part of a ModelScope id, a branch, a tag, a commit id


def hub_problem(model_id: str, revision: str) -> str | None:
    """The ModelScope client makes folders of both (cache/models/<owner>/<name>, snapshots/<revision>): each must
    be a name, never a path that leaves its folder."""
    def names(parts: list[str]) -> bool:
        return all(HUB_NAME.fullmatch(x) and ".." not in x for x in parts)

    parts = model_id.split("/")
    if len(parts) != 2 or not names(parts):
        return (f"model.model_id {model_id!r}: expected a ModelScope id owner/name (letters, digits, '.', '_', '-'), "
                "e.g. Qwen/Qwen3-VL-2B-Instruct")
    if not names(revision.split("/")):
        return (f"model.revision {revision!r}: expected a branch, a tag or a commit id (letters, digits, '.', '_', '-', "
                "'/' between names; no '..'), e.g. master")
    return None


def backend_problem(backend: str) -> str | None:
    """ms-swift imports the package named after infer.infer_backend only when inference starts (after training):
    its absence is said here, before any stage works."""
    if backend not in ("vllm", "lmdeploy", "sglang") or importlib.util.find_spec(backend) is not None:
        return None
    return (f"infer.infer_backend {backend!r} needs the {backend} package, which this Python ({sys.executable}) "
            f"does not have: pip install {backend} (it needs a CUDA GPU and pins its own torch version), or set "
            "infer.infer_backend: transformers")


def rule_problems(p: dict) -> list[str]:
    """Cross-field rules on the raw params: each yields its problem or nothing. A rule whose keys are missing or
    mistyped is skipped: the schema already reports those keys."""
    m, d, t, s, i = (p.get(k) if isinstance(p.get(k), dict) else {}
                     for k in ("model", "data", "train", "score", "infer"))
    rules: list[Callable[[], str | None]] = [
        lambda: backend_problem(i["infer_backend"]),
        lambda: hub_problem(m["model_id"], m["revision"]),
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
        lambda: f"data.answer_kind: text with data.format {d['format']} takes one answer column; data.columns.answer "
                f"lists {len(d['columns']['answer'])} ({', '.join(d['columns']['answer'])}): keep one, or set "
                "data.answer_kind: json (or auto) for a JSON object of them"
        if d["answer_kind"] == "text" and d["format"] == "table" and len(d["columns"]["answer"]) > 1 else None,
        lambda: f"score.tolerance: {', '.join(bad)} not numeric in score.fields; numeric fields: "
                f"{', '.join(f for f, k in s['fields'].items() if k == 'numeric') or 'none'}"
        if (bad := [f for f in s["tolerance"] if s["fields"] and s["fields"].get(f) != "numeric"]) else None,
    ]
    return [problem for rule in rules if (problem := _apply(rule))]


def _apply(rule: Callable[[], str | None]) -> str | None:
    try:
        return rule()
    except (KeyError, TypeError, AttributeError):
        return None


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
    ("synth.", lambda p: p["data"]["raw_dir"] != SYNTH_DIR,
     f"data.raw_dir is not {SYNTH_DIR}: the synthetic data is not trained on; set data.raw_dir to {SYNTH_DIR}"),
    ("data.columns.", lambda p: p["data"]["format"] not in ("table", "auto"),
     "data.format is not table: the column roles are not read"),
    ("data.label_map", lambda p: p["data"]["format"] not in ("filename", "auto"),
     "data.format is not filename: the label map is not read"),
    ("data.label_separator", lambda p: p["data"]["format"] not in ("filename", "auto"),
     "data.format is not filename: file names are not parsed"),
    ("data.test_ratio", lambda p: bool(p["data"]["test_labels"]),
     "data.test_labels is set: the test set is that file, nothing is split off"),
]


def inert_changes(params: dict, reference: dict) -> list[str]:
    """Keys changed against `reference` (the committed params.yaml) that do nothing under the other settings."""
    new, old = flatten(params), flatten(reference)
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
