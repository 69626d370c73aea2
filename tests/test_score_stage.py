"""Stage `score` around the metrics: its params, the checks on its inputs, the tables it writes, and the
plot definitions and offline page that `dvc plots show` uses."""
import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from stages.params import ParamsError, validate
from stages.common import to_csv
from stages.score import plot_tables, worst_markdown, worst_table
from stages.scoring.fields import check_predictions
from tests.conftest import ROOT

REF = {"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}
SPECS = {"analysis": {"type": "text", "tolerance": 0}, "direction": {"type": "categorical", "tolerance": 0},
         "distance": {"type": "numeric", "tolerance": 1}}


def pred_row(i: int, labels=REF, response="") -> dict:
    return {"response": response, "labels": json.dumps(labels, ensure_ascii=False),
            "images": [{"bytes": None, "path": f"data/raw/images/{i:06d}_{k}.png"} for k in (1, 2)]}


def sample_row(i: int, labels=REF) -> dict:
    return {"id": f"{i:06d}", "images": [f"data/raw/images/{i:06d}_{k}.png" for k in (1, 2)],
            "messages": [{"role": "user", "content": "<image><image>?"},
                         {"role": "assistant", "content": json.dumps(labels, ensure_ascii=False)}]}


# --- params -------------------------------------------------------------------------------------------

def test_score_params_of_the_repository(params):
    score = validate(params)["score"]
    assert score["fields"] == {} and score["tolerance"] == {"distance": 1}


@pytest.mark.parametrize("section, match", [
    ({"fields": {"direction": "label"}},
     r"score\.fields\.direction: Input should be 'categorical', 'numeric' or 'text', got 'label'"),
    ({"tolerance": {"distance": -1}}, r"score\.tolerance\.distance: Input should be greater than or equal to 0"),
    ({"fields": {"direction": "categorical", "distance": "numeric"}, "tolerance": {"direction": 1}},
     r"score\.tolerance: direction not numeric in score\.fields; numeric fields: distance"),
    ({"max_classes": 1}, r"score\.max_classes: Input should be greater than 1"),
    ({"worst_n": -1}, r"score\.worst_n: Input should be greater than or equal to 0"),
    ({"distance_tolerance": 1}, r"score\.distance_tolerance: unknown key; did you mean 'tolerance'\?"),
    ({"fields": ["direction"]}, r"score\.fields: Input should be a valid dictionary"),
])
def test_bad_score_params_are_named(params, section, match):
    params["score"].update(section)
    with pytest.raises(ParamsError, match=match):
        validate(params)


# --- inputs -------------------------------------------------------------------------------------------

def test_predictions_of_the_test_split_pass():
    assert check_predictions([pred_row(1), pred_row(2)], [sample_row(1), sample_row(2)]) == []


def test_predictions_of_another_split_report_every_bad_row():
    preds = [pred_row(1), pred_row(9), {**pred_row(3), "labels": "电机"}, pred_row(4)]
    problems = check_predictions(preds, [sample_row(i) for i in (1, 2, 3, 4)])
    assert problems == ["row 2 (id 000002): prediction's images differ from the test split's",
                        "row 3 (id 000003): prediction's reference answer differs from the test split's"]


def test_predictions_need_one_per_test_sample():
    assert check_predictions([pred_row(1)], [sample_row(1), sample_row(2)]) == [
        "1 predictions for 2 test samples: rerun inference"]


# --- outputs ------------------------------------------------------------------------------------------

def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_plot_tables_in_long_format_one_row_per_sample_and_field():
    pairs = [(REF, dict(REF)), (REF, {"direction": "+", "distance": 9}), (REF, {"distance": "7"}), (REF, None)]
    tables = plot_tables(["a", "b", "c", "d"], pairs, SPECS)
    assert read_csv(tables["confusion.csv"]) == [                                 # text fields get no plot
        {"answer_field": "direction", "actual": "-", "predicted": p} for p in ("-", "+", "(missing)", "(missing)")]
    assert read_csv(tables["errors.csv"]) == [
        {"answer_field": "distance", "id": "a", "expected": "7", "predicted": "7", "error": "0"},
        {"answer_field": "distance", "id": "b", "expected": "7", "predicted": "9", "error": "2"}]  # "7", None: no number


def test_plot_tables_always_write_both_files():
    """A stage output that is sometimes missing would leave DVC's status dirty; a header-only file is not."""
    tables = plot_tables(["a"], [({"t": "x"}, None)], {"t": {"type": "text", "tolerance": 0}})
    assert tables == {"confusion.csv": "answer_field,actual,predicted\n",
                      "errors.csv": "answer_field,id,expected,predicted,error\n"}


def test_worst_table_and_markdown():
    tests = [sample_row(1), sample_row(2), sample_row(3)]
    responses = ["ok", '{"direction": "+"}', "\n\n| no json"]
    parsed = [(dict(REF), "ok"), ({"direction": "+"}, "repaired"), (None, "failed")]
    table = worst_table(tests, responses, [REF] * 3, parsed, SPECS, k=5)
    assert [(r["id"], r["status"], r["wrong"]) for r in table] == [
        ("000003", "failed", ["analysis", "direction", "distance"]),
        ("000002", "repaired", ["analysis", "direction", "distance"])]
    assert table[0]["predicted"] == "\n\n| no json" and table[1]["predicted"] == {"direction": "+"}
    md = worst_markdown("finetuned", table, n=3)
    assert md.startswith("# Worst predictions: finetuned (2 shown of 3)")
    row = md.splitlines()[7]
    assert row.startswith("| 1 | 000003 | failed | analysis, direction, distance | ")
    assert '"\\n\\n\\| no json"' in row                               # raw response escaped, pipe kept out
    assert "[000003_1.png](<../data/raw/images/000003_1.png>)" in row   # links work from metrics/
    table_lines = [line for line in md.splitlines()[5:] if line.startswith("|")]
    assert len(table_lines) == 4 and "text scores" in table_lines[0]                 # a text field: 8 columns
    assert all(line.replace("\\|", "").count("|") == 9 for line in table_lines)
    assert "analysis: chrF" in table_lines[2]


def test_worst_markdown_when_all_right():
    assert "Every prediction is right." in worst_markdown("base", [], n=4)


def test_to_csv_quotes_what_needs_it():
    assert to_csv([{"a": "x,y", "b": '"q"'}], ["a", "b"]) == 'a,b\n"x,y","""q"""\n'


# --- plots configuration ------------------------------------------------------------------------------

def test_plot_templates_named_in_dvc_yaml_exist_and_facet_by_answer_field():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    plots = spec["stages"]["score"]["do"]["plots"]
    assert {Path(f).name for p in plots for f in p} == set(plot_tables([], [], {}))   # the files the stage writes
    for props in (props for p in plots for props in p.values()):
        template = json.loads((ROOT / ".dvc" / "plots" / f"{props['template']}.json").read_text(encoding="utf-8"))
        assert "<DVC_METRIC_DATA>" in json.dumps(template)
        assert template["facet"]["row"]["field"] == "answer_field"
    loss = next(p["loss"] for p in spec["plots"] if "loss" in p)
    assert set(loss["y"]) == {"metrics/plots/train_loss.csv", "metrics/plots/eval_loss.csv"}


def test_offline_page_loads_nothing_from_the_network():
    config = (ROOT / ".dvc" / "config").read_text(encoding="utf-8")
    assert "html_template = plots/offline.html" in config
    page = (ROOT / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page          # DVC would add its CDN <script> tags
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    for name in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"/* {name} build/" in page


@pytest.mark.parametrize("command, report", [(["stages.score", "finetuned"], "metrics/worst_finetuned.md"),
                                             (["stages.compare"], "metrics/compare.md")])
@pytest.mark.parametrize("same_test_set", [True, False])
def test_predictions_of_another_test_set_are_one_clear_error(tmp_path, command, report, same_test_set):
    """Predictions that do not belong to the test split: the stage says so, exits 1 without a traceback, keeps the
    previous outputs when they were computed on this test set and removes them when they were computed on another
    (so that `dvc metrics show` never shows another data set's figures beside this run's)."""
    import shutil
    import subprocess
    import sys

    from stages.common import test_set_marker

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    test = [sample_row(i) for i in range(3)]
    preds = [pred_row(i) for i in range(2)]
    for path, rows in (("data/dataset/test.jsonl", test), ("data/predictions/base.jsonl", preds),
                       ("data/predictions/finetuned.jsonl", preds)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "data/dataset/fields.json").write_text(json.dumps({"answer_kind": "json", "fields": SPECS}))
    marker = test_set_marker(tmp_path / "data" / "dataset") if same_test_set else "<!-- test set: blake2b 0 -->"
    previous = tmp_path / "metrics/compare/parse_rate.json", tmp_path / "metrics/details/finetuned.json"
    for f in previous:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"kept": true}\n', encoding="utf-8")
    (tmp_path / report).write_text(f"# previous\n{marker}\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "2 predictions for 3 test samples: rerun inference" in r.stderr
    mine = previous[0] if command == ["stages.compare"] else previous[1]
    other = previous[1] if command == ["stages.compare"] else previous[0]
    assert mine.exists() is same_test_set and (tmp_path / report).exists() is same_test_set
    assert other.read_text(encoding="utf-8") == '{"kept": true}\n'          # another stage's output: untouched
    assert ("computed on another test set" in r.stderr) is not same_test_set