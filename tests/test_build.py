import json

import pandas as pd
import pytest
from PIL import Image

from stages.build import Sample, rows_to_samples, split, to_swift

CFG = {"id_column": "id", "image_columns": ["image_1", "image_2"],
       "answer_columns": ["analysis", "direction", "distance"]}


def make_raw(tmp_path, rows):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8)).save(tmp_path / "images" / name)
    return pd.DataFrame(rows).convert_dtypes()


def test_to_swift_one_image_tag_per_image_and_typed_answer():
    s = Sample("7", ("data/raw/a.png", "data/raw/b.png"), {"direction": "-", "distance": 7})
    row = to_swift(s, "请分析", system="")
    assert row == {"id": "7", "images": ["data/raw/a.png", "data/raw/b.png"], "messages": [
        {"role": "user", "content": "<image><image>请分析"},
        {"role": "assistant", "content": '{"direction": "-", "distance": 7}'}]}
    assert to_swift(s, "q", system="You are a microscope.")["messages"][0] == {
        "role": "system", "content": "You are a microscope."}


def test_split_is_seeded_disjoint_and_complete():
    a, b = split(100, 0.1, 0.15, seed=1), split(100, 0.1, 0.15, seed=1)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [75, 10, 15]
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100))
    assert split(100, 0.1, 0.15, seed=2) != a
    assert split(10, 0.0, 0.1, seed=0)["val"] == []


def test_split_too_small():
    with pytest.raises(ValueError, match="2 samples is too few to split"):
        split(2, 0.5, 0.4, seed=0)


def test_rows_to_samples_keeps_number_types(tmp_path):
    df = make_raw(tmp_path, [{"id": 1, "image_1": "images/a.png", "image_2": "images/b.png",
                              "analysis": "x", "direction": "+", "distance": 3}])
    samples, problems = rows_to_samples(df, CFG, tmp_path, "labels.csv")
    assert problems == []
    assert json.dumps(samples[0].answer) == '{"analysis": "x", "direction": "+", "distance": 3}'


def test_rows_to_samples_reports_every_problem_with_its_line(tmp_path):
    df = make_raw(tmp_path, [
        {"id": 1, "image_1": "images/a.png", "image_2": "images/missing.png", "analysis": "x", "direction": "+", "distance": 3},
        {"id": 1, "image_1": "../../etc/passwd", "image_2": "images/b.png", "analysis": "x", "direction": "", "distance": 3},
    ])
    _, problems = rows_to_samples(df, CFG, tmp_path, "labels.csv")
    assert len(problems) == 4
    assert problems[0].startswith("labels.csv:2: image not found:")
    assert "labels.csv:3: duplicate id '1'" in problems
    assert "labels.csv:3: image path '../../etc/passwd' escapes the data folder" in problems[2]
    assert problems[3] == "labels.csv:3: empty answer field(s) direction"


def test_rows_to_samples_missing_column(tmp_path):
    df = make_raw(tmp_path, [{"id": 1, "image_1": "images/a.png"}])
    _, problems = rows_to_samples(df, CFG, tmp_path, "labels.csv")
    assert problems == ["labels.csv: missing column(s) image_2, analysis, direction, distance; "
                        "the table has id, image_1"]
