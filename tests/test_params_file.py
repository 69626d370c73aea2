"""params.yaml survives DVC's own `-S key=value` rewrite (dvc.utils.hydra.apply_overrides, what `dvc exp run -S`
and `dvc exp run $(python -m stages.commands.profile ...)` call): after any sequence of experiments it parses and
holds exactly the values set. A list with a comment beside it once came back as `lr_scheduler_type: cosine
warmup_ratio: 0.05`, one line, and params.yaml no longer parsed."""
import shutil
import subprocess
import sys

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from stages.params.tree import flatten
from tests.conftest import ROOT

BASE = flatten(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))


def sequences() -> list[list[str]]:
    """Per list-valued key: filled, emptied, filled again (the rewrite that broke); per null or text key: set and
    set back."""
    seqs = []
    for key, value in BASE.items():
        if isinstance(value, list):
            seqs += [[f"{key}=[x,y]", f"{key}=[]", f"{key}=[z]"], [f"{key}=[]", f"{key}=[q]"]]
        elif value is None:
            seqs.append([f"{key}=0.5", f"{key}=null"])
        elif isinstance(value, str):
            seqs.append([f"{key}=abc", f"{key}=''"])
    return seqs


def applied(tmp_path, *runs: list[str]) -> dict:
    """params.yaml after one `dvc exp run` per element of `runs` (each a list of -S overrides)."""
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    for overrides in runs:
        apply_overrides(str(path), overrides)
    return flatten(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("seq", sequences(), ids=lambda s: s[0])
def test_every_list_null_and_text_key_survives_experiments(tmp_path, seq):
    want = dict(BASE)
    for o in seq:
        key, value = o.split("=", 1)
        want[key] = yaml.safe_load(value)
    assert applied(tmp_path, *[[o] for o in seq]) == want


def test_the_readme_sequence_an_experiment_then_the_gpu_profile(tmp_path):
    """README: `dvc exp run -S lora.rank=32`, then `dvc exp run $(python -m stages.commands.profile
    params-gpu.yaml)`, then the profile again with freeze_parameters emptied (the case that broke)."""
    options = subprocess.run([sys.executable, "-m", "stages.commands.profile", "params-gpu.yaml"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    profile = [o.removeprefix("-S") for o in options]
    got = applied(tmp_path, ["lora.rank=32"], profile, ["train.freeze_parameters=[model.visual]"],
                  ["train.freeze_parameters=[]"])
    want = BASE | {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in profile)}
    assert got == want | {"train.freeze_parameters": []}
