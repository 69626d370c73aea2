"""The commands that compare experiments: A/B on the same items (stages.commands.ab) and seed noise
(stages.commands.seeds), on their pure parts; the e2e tests run both against real DVC experiments."""
import math

import pytest

from stages.commands.ab import same_items_problem, table, verdict
from stages.commands.seeds import configurations, report, runs, summary, welch
from stages.compare import compare

SPECS = {"direction": {"type": "categorical", "tolerance": 0}, "distance": {"type": "numeric", "tolerance": 1}}


def ab_result(a_right: int, b_right: int, n: int = 40):
    refs = [{"direction": "+", "distance": 3}] * n
    side = lambda k: [({"direction": "+" if i < k else "-", "distance": 3}, "ok") for i in range(n)]  # noqa: E731
    return compare(refs, side(a_right), side(b_right), SPECS)


def test_the_a_b_table_gives_every_measure_its_interval_and_test():
    out = table(ab_result(20, 38), "HEAD", "rank32")
    lines = out.splitlines()
    assert lines[:2] == ["A: HEAD", "B: rank32"]
    assert lines[3].split()[:4] == ["measure", "A", "B", "B"]
    row = next(line.split() for line in lines if line.startswith("direction_accuracy"))
    assert row[1:4] == ["50.0%", "95.0%", "+45.0%"] and row[5] == ".." and row[-3:] == ["McNemar", "exact", "40"]
    assert len({len(line) for line in lines[3:]}) == 1                    # aligned columns


def test_the_verdict_says_which_side_wins_only_beyond_chance():
    assert "B better on exact_match, direction_accuracy" in verdict(ab_result(20, 38))
    assert "B worse on exact_match, direction_accuracy" in verdict(ab_result(38, 20))
    assert verdict(ab_result(30, 32)).startswith("No measure differs beyond chance")


def test_two_test_splits_are_not_paired():
    test, fields = {"a": "x", "b": "y"}, {"a": "f", "b": "f"}
    assert "different test splits" in same_items_problem("a", "b", test, fields)
    assert "score different fields" in same_items_problem("a", "b", {"a": "x", "b": "x"}, {"a": "f", "b": "g"})
    assert same_items_problem("a", "b", {"a": "x", "b": "x"}, fields) is None


def exp(name: str, seed: int, rank: int, direction: float) -> dict:
    """One revision of `dvc exp show --json`, as DVC 3 writes it."""
    return {"rev": name, "name": name, "data": {
        "params": {"params.yaml": {"data": {"seed": seed, "lora": {"rank": rank, "alpha": 32}}}},
        "metrics": {"metrics/headline.json": {"data": {"direction": direction, "base": {"direction": 0.0}}}}}}


SHOW = [{"rev": "workspace", **exp("workspace", 3, 32, 0.99)},
        {**exp("abc1234", 42, 8, 0.95), "experiments": [
            {"revs": [exp("s1", 1, 8, 0.96)]}, {"revs": [exp("s2", 2, 8, 0.97)]},
            {"revs": [exp("r42", 42, 32, 0.98)]}, {"revs": [exp("r1", 1, 32, 0.99)]},
            {"revs": [exp("r2", 2, 32, 0.985)]}, {"revs": [{"rev": "q", "name": "queued", "error": {"msg": "x"}}]}]}]


def test_seeds_group_experiments_by_everything_but_the_seed():
    found = runs(SHOW)
    assert [r["name"] for r in found] == ["abc1234", "s1", "s2", "r42", "r1", "r2"]   # no workspace, no error
    named = configurations(found)
    assert list(named) == ["lora.rank=8", "lora.rank=32"]
    stats = summary(named)
    assert stats["lora.rank=8"]["direction"]["n"] == 3
    assert stats["lora.rank=8"]["direction"]["mean"] == pytest.approx(0.96)
    assert stats["lora.rank=8"]["direction"]["sd"] == pytest.approx(0.01)


def test_welch_needs_two_seeds_a_side_and_tells_a_real_gap():
    assert welch([0.95], [0.96, 0.97]) is None
    assert welch([0.95, 0.96, 0.97], [0.98, 0.99, 0.985]) < 0.05
    assert welch([0.95, 0.97, 0.96], [0.96, 0.95, 0.97]) == pytest.approx(1.0)


def test_the_seed_report_states_spread_and_detectable_difference():
    lines = report(configurations(runs(SHOW))).splitlines()
    assert lines[0] == "lora.rank=8: 3 seed(s) (42, 1, 2)"
    assert lines[1].split() == ["measure", "mean", "%", "sd", "min", "..", "max", "tells", "apart"]
    assert lines[2].split() == ["direction", "96.00", "1.00", "95.00", "..", "97.00",
                                f"{100 * 2.8 * 0.01 * math.sqrt(2 / 3):.2f}"]
    rank32 = lines[lines.index("lora.rank=32: 3 seed(s) (42, 1, 2)") + 2].split()
    assert rank32[:2] == ["direction", "98.50"] and rank32[-3] == "+2.50" and rank32[-1] == "*"
    assert max(map(len, lines)) <= 120
