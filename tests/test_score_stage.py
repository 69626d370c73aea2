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
from stages.scoring.fields import references
from tests.conftest import ROOT

REF = {"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}
SPECS = {"analysis": {"type": "text", "tolerance": 0}, "direction": {"type": "categorical", "tolerance": 0},
         "distance": {"type": "numeric", "tolerance": 1}}


def pred_row(i: int, labels=REF, response="") -> dict:
    return {"response": response, "labels": json.dumps(labels, ensure_ascii=False),
            "images": [{"bytes": None, "path": f"data/raw/images/{i:06d}_{k}.png"} for k in (1, 2)]}


def sample_row(i: int) -> dict:
    return {"id": f"{i:06d}", "images": [f"data/raw/images/{i:06d}_{k}.png" for k in (1, 2)]}


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

def test_references_parse_labels_in_test_order():
    assert references([pred_row(1), pred_row(2)], [sample_row(1), sample_row(2)]) == [REF, REF]


def test_references_report_every_bad_row():
    preds = [pred_row(1), pred_row(9), {**pred_row(3), "labels": "电机"}, {**pred_row(4), "labels": "[1]"}]
    with pytest.raises(ValueError, match=r"3 test rows cannot be scored") as e:
        references(preds, [sample_row(i) for i in (1, 2, 3, 4)])
    msg = str(e.value)
    assert "row 2 (id 000002): prediction's images differ" in msg
    assert "row 3 (id 000003): reference answer is not a JSON object" in msg and "row 4 (id 000004)" in msg


def test_references_need_one_prediction_per_test_sample():
    with pytest.raises(ValueError, match=r"1 predictions for 2 test samples: rerun inference"):
        references([pred_row(1)], [sample_row(1), sample_row(2)])


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
    assert "[000003_1.png](../data/raw/images/000003_1.png)" in row   # links work from metrics/
    assert all(line.replace("\\|", "").count("|") == 8 for line in md.splitlines()[5:])   # 7 columns each


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


@pytest.mark.parametrize("command", [["stages.score", "finetuned"], ["stages.compare"]])
def test_score_params_that_do_not_fit_the_answers_are_one_clear_error(tmp_path, command):
    """Own data without a `distance` field under the default `score.tolerance: {distance: 1}`: the stage says what
    is wrong and what to set, exits 1 without a traceback, and leaves the previous outputs as they were."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / f, tmp_path / f)
    test = [{"id": f"{i}", "messages": [], "images": [f"data/raw/{i}.png"]} for i in range(3)]
    preds = [{"response": '{"status": "ok"}', "labels": '{"status": "ok"}', "images": t["images"]} for t in test]
    for path, rows in (("data/dataset/test.jsonl", test), ("data/predictions/base.jsonl", preds),
                       ("data/predictions/finetuned.jsonl", preds)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    previous = tmp_path / "metrics/compare/parse_rate.json", tmp_path / "metrics/details/finetuned.json"
    for f in previous:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text('{"kept": true}\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "score.tolerance.distance: not a numeric field; numeric fields: none" in r.stderr
    assert "set score.tolerance in params.yaml to {}" in r.stderr
    assert all(f.read_text(encoding="utf-8") == '{"kept": true}\n' for f in previous)
