import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
