import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# The shipped values that unit tests reason about (messages such as "lora.rank changed (8 -> 32)", the argv of the
# default LoRA, the builtin model's plugin). `shipped()` sets them, so that a user's committed experiment (the
# README's `dvc exp apply` + git commit of lora.rank=32, or of the GPU profile) does not change what those tests check.
SHIPPED = {"train.tuner_type": "lora", "train.use_liger_kernel": False, "model.source": "builtin",
           "model.model_id": "Qwen/Qwen3-VL-2B-Instruct", "model.local_dir": "", "model.template": "",
           "model.builtin.hidden_size": 64, "lora.rank": 8, "lora.alpha": 32, "lora.dropout": 0.05,
           "lora.target_modules": ["all-linear"], "lora.use_dora": False, "lora.use_rslora": False,
           "lora.modules_to_save": [], "lora.dtype": None, "synth.num_samples": 3200,
           "data.raw_dir": "data/raw", "data.format": "table", "data.columns.id": "id",
           "data.label_map": "label_map.json", "data.test_labels": "", "data.test_ratio": 0.15}


def shipped(params: dict) -> dict:
    """`params` (a whole params.yaml) with SHIPPED set in place."""
    from stages.params.tree import set_dotted

    for key, value in SHIPPED.items():
        set_dotted(params, key, value, strict=True)
    return params


@pytest.fixture
def params() -> dict:
    """A fresh copy of the repository's params.yaml."""
    with open(ROOT / "params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


class Reliability:
    """Counts for the reliability summary line (faults injected/survived, bad inputs tried/refused, outputs lost,
    files outside the outputs changed)."""

    def __init__(self):
        self.counts = dict(injected=0, survived=0, tried=0, refused=0, lost=0, outside=0)

    def fault(self):
        self.counts["injected"] += 1

    def survived(self):
        self.counts["survived"] += 1

    def bad_input(self, refused: bool):
        self.counts["tried"] += 1
        self.counts["refused"] += refused

    def lost(self, n: int):
        self.counts["lost"] += n

    def outside_changed(self, n: int):
        self.counts["outside"] += n


_RELIABILITY = Reliability()


@pytest.fixture(scope="session")
def reliability() -> Reliability:
    return _RELIABILITY


def pytest_terminal_summary(terminalreporter):
    c = _RELIABILITY.counts
    if c["injected"] or c["tried"]:
        terminalreporter.write_line(
            f"reliability: faults injected {c['injected']} / survived {c['survived']}; bad inputs tried "
            f"{c['tried']} / refused with a clear message {c['refused']}; outputs lost {c['lost']}; "
            f"files outside the outputs changed {c['outside']}")
