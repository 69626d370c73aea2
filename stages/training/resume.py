"""Resuming an interrupted `swift sft` run (train.resume): only a run that did not finish, started with the same
command line, environment and inputs, from its newest complete checkpoint. Anything else trains afresh."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

BIG = 64 << 20   # larger files (model weights, GBs) are fingerprinted by size and modification time, not read
RECORD = "run.json"


def fingerprint(root: Path, paths: list[str]) -> dict[str, str]:
    """Each file under `paths` (relative to `root`) -> its sha256, or size:mtime for a big one."""
    out = {}
    for path in paths:
        top = root / path
        for f in [top] if top.is_file() else sorted(f for f in top.rglob("*") if f.is_file()):
            st = f.stat()
            out[f.relative_to(root).as_posix()] = (f"{st.st_size}:{st.st_mtime_ns}" if st.st_size > BIG
                                                   else hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def record(argv: list[str], env: dict[str, str], inputs: dict[str, str], finished: bool = False) -> dict:
    return {"argv": argv, "env": env, "inputs": inputs, "finished": finished}


def write_record(work: Path, run: dict) -> None:
    (work / RECORD).write_text(json.dumps(run, indent=1), encoding="utf-8")


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two run records, in words (the first few input files by name)."""
    names = {"argv": "swift sft command line", "env": "environment (IMAGE_MAX_TOKEN_NUM)"}
    why = [f"the {name} changed" for k, name in names.items() if old.get(k) != new[k]]
    inputs = old.get("inputs") or {}
    changed = sorted(f for f in inputs.keys() | new["inputs"].keys() if inputs.get(f) != new["inputs"].get(f))
    if changed:
        why.append(f"{len(changed)} input file(s) changed ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})")
    return why


def resume_from(work: Path, run: dict) -> tuple[Path | None, str]:
    """(the checkpoint to resume from, or None; why not, when None)."""
    try:
        old = json.loads((work / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        return None, "no record of an earlier run"
    if old.get("finished", True):
        return None, "the last run finished"
    if why := differences(old, run):
        return None, "; ".join(why)
    done = [c for c in work.glob("checkpoint-*") if (c / "trainer_state.json").is_file()]
    if not done:
        return None, "the last run saved no complete checkpoint"
    return max(done, key=lambda c: int(c.name.split("-")[1])), ""


def resumed_loss(start: dict, final_steps: int, resumed_mean: float) -> float:
    """Mean loss over every step whose loss was logged, both runs': the Trainer's train_loss after a resume covers
    only the resumed steps. `start`: the checkpoint's trainer state; the steps after its last logged interval were
    lost with the interrupted run."""
    logged = [r for r in start["log_history"] if "loss" in r]
    before, prev = 0.0, 0
    for r in logged:
        before, prev = before + r["loss"] * (r["step"] - prev), r["step"]
    n = final_steps - start["global_step"]
    return (before + resumed_mean * n) / max(prev + n, 1)
