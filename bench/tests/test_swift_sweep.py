"""bench/swift_sweep.py, the embedded default's recipe sweep through `swift sft`: a variant's keys land in params or
on the command line, and a small sweep on the CPU prepares a seed with the real stages, fine-tunes with the real
`swift sft`, scores the checkpoint with the pipeline's infer and score stages, and scores it again without training when asked to reuse it."""
import json
import subprocess
import sys

import pytest

from bench.swift_sweep import variant_params
from tests.conftest import ROOT
from tests.workspace import ENV


def test_variant_keys_go_to_params_or_to_the_command_line():
    base = {"seed": 42, "train": {"freeze_vit": True, "per_device_train_batch_size": 8}}
    params, extra = variant_params(base, {"train.freeze_vit": False, "seed": 1, "swift.adam_beta2": 0.999,
                                          "swift.use_logits_to_keep": True})
    assert params == {"seed": 1, "train": {"freeze_vit": False, "per_device_train_batch_size": 8}}
    assert extra == ["--adam_beta2", "0.999", "--use_logits_to_keep", "true"]
    assert base["train"]["freeze_vit"] is True and base["seed"] == 42     # the base is not changed
    with pytest.raises(KeyError, match="train.freez_vit"):
        variant_params(base, {"train.freez_vit": False})


@pytest.mark.slow
def test_small_sweep_on_the_cpu(tmp_path):
    out = tmp_path / "rows.jsonl"
    sweep = [sys.executable, "-m", "bench.swift_sweep", "--seeds", "3", "--work", str(tmp_path / "w"),
             "--out", str(out), "--base", json.dumps({"synth.num_samples": 120, "model.builtin.pretrain_vision_steps": 5}),
             "--variants", json.dumps({"short": {"train.num_train_epochs": 1, "train.eval_steps": 5, "lora.rank": 4}})]
    for reuse in ([], ["--reuse"]):
        r = subprocess.run(sweep + reuse, cwd=ROOT, env=ENV, text=True, capture_output=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    trained, rescored = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert trained["variant"] == "short" and trained["seed"] == 3 and "error" not in trained
    assert trained["checkpoint"].startswith("checkpoint-") and trained["eval_loss"]
    assert {"parse_rate", "exact_match", "direction", "distance", "analysis"} <= trained.keys()
    assert all(0 <= trained[k] <= 1 for k in ("parse_rate", "direction", "distance"))
    assert "wall_s" in trained and "wall_s" not in rescored          # --reuse scored it again without training
    assert {k: v for k, v in trained.items() if k != "wall_s"} == rescored
