"""Unit tests of the build stage's pure parts: rows, splits, typing, the label map, message and image checks."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.build import DataError
from stages.dataset.checks import check_messages, pixel_budget, resolve_image
from stages.dataset.images import inspect_image
from stages.dataset.formats import detect
from stages.dataset.formats.filename import decode, parse_label_map
from stages.dataset.formats.table import typed
from stages.dataset.records import Place, swift_row
from stages.dataset.split import class_label, imbalance_warning, split, stratified_split
from tests.workspace import corrupt_png_pixels

FIXTURES = Path(__file__).parent / "fixtures"
LABEL_MAP = {"mapping_type": "positional",
             "positions": [{"field": "status", "map": {"0": "No Leakage", "1": "Leakage"}},
                           {"field": "sub_type", "map": {"0": "Normal", "1": "Ambient Dust", "2": "Light Beams",
                                                         "3": "High Pressure", "4": "Low Pressure"}},
                           {"field": "is_night_mode", "map": {"0": False, "1": True}}],
             "defaults": {"confidence": 1.0, "reasoning": "Auto-generated."}}


def test_swift_row_one_image_tag_per_image_unless_the_question_places_them():
    row = swift_row("7", ["a.png", "b.png"], "请分析", '{"direction": "-", "distance": 7}', system="")
    assert row == {"id": "7", "images": ["a.png", "b.png"], "messages": [
        {"role": "user", "content": "<image><image>请分析"},
        {"role": "assistant", "content": '{"direction": "-", "distance": 7}'}]}
    assert swift_row("7", ["a.png"], "q", "a", system="You are a microscope.")["messages"][0] == {
        "role": "system", "content": "You are a microscope."}
    assert swift_row("7", ["a", "b"], "Is <image> sharper than <image>?", "a", "")["messages"][0]["content"] == \
        "Is <image> sharper than <image>?"


def test_split_is_seeded_disjoint_and_complete():
    a, b = split(100, 0.1, 0.15, seed=1), split(100, 0.1, 0.15, seed=1)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [75, 10, 15]
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100))
    assert split(100, 0.1, 0.15, seed=2) != a
    assert split(10, 0.0, 0.1, seed=0)["val"] == []
    assert split(10, 0.2, 0, seed=0)["test"] == []   # a fixed test file: train/val only


def test_split_too_small():
    with pytest.raises(ValueError, match="2 samples is too few to split"):
        split(2, 0.5, 0.4, seed=0)


def test_stratified_split_keeps_class_proportions_in_every_part():
    labels = ['"a"'] * 80 + ['"b"'] * 20
    parts = stratified_split(labels, 0.1, 0.2, seed=3, field="status")
    assert parts == stratified_split(labels, 0.1, 0.2, seed=3, field="status")
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(100))
    assert [sum(labels[i] == '"b"' for i in parts[k]) for k in ("train", "val", "test")] == [14, 2, 4]
    assert [sum(labels[i] == '"a"' for i in parts[k]) for k in ("train", "val", "test")] == [56, 8, 16]


def test_stratified_split_names_every_class_too_small_to_split():
    labels = ['"Leakage"'] * 10 + ['"High Pressure"'] * 2 + ['"Night"']
    with pytest.raises(DataError) as e:
        stratified_split(labels, 0.1, 0.15, seed=0, field="sub_type")
    assert str(e.value) == (
        "data.stratify 'sub_type': too few samples to split every class into train/val/test (val_ratio 0.1, "
        "test_ratio 0.15), each part needs one: class \"High Pressure\" has 2 samples; class \"Night\" has 1 sample; "
        "add samples, merge classes, or set data.stratify: \"\"")


def test_class_label_is_the_answer_field_as_json():
    assert class_label(swift_row("1", [], "q", '{"status": "ok", "n": 3}', ""), "status") == '"ok"'
    assert class_label(swift_row("1", [], "q", '{"status": "ok", "n": 3}', ""), "n") == "3"
    assert class_label(swift_row("1", [], "q", '{"status": "ok", "n": 3}', ""), "other") is None
    assert class_label(swift_row("2", [], "q", "plain text", ""), "status") == '"plain text"'   # its own class


def test_typed_columns_keep_numbers_numbers_and_codes_text():
    col = lambda *v: pd.Series(v, dtype=object)  # noqa: E731
    assert typed(col("3", "10", None)) == [3, 10, None]
    assert typed(col("0.5", "1.0", "2")) == [0.5, 1.0, 2.0]
    assert typed(col("007", "12")) == ["007", "12"]          # a leading zero: a code, not a number
    assert typed(col("True", "false")) == [True, False]
    assert typed(col("None", "NA", "+")) == ["None", "NA", "+"]   # no NA guessing: text as written
    assert typed(col("1", "x")) == ["1", "x"]


def test_label_code_decodes_positions_then_defaults():
    positions, defaults, problems = parse_label_map(LABEL_MAP, "label_map.json")
    assert problems == []
    answer, problems = decode("130", positions, defaults, "label_map.json")
    assert problems == []
    assert json.dumps(answer) == ('{"status": "Leakage", "sub_type": "High Pressure", "is_night_mode": false, '
                                  '"confidence": 1.0, "reasoning": "Auto-generated."}')


def test_label_code_problems():
    positions, defaults, _ = parse_label_map(LABEL_MAP, "label_map.json")
    assert decode("170", positions, defaults, "label_map.json")[1] == [
        "label value '7' at position 2 (sub_type) is not in label_map.json; expected one of 0, 1, 2, 3, 4"]
    assert decode("13", positions, defaults, "label_map.json")[1] == [
        "label code '13' has 2 character(s); expected 3, one per position of label_map.json "
        "(status, sub_type, is_night_mode)"]


def test_label_map_problems():
    assert parse_label_map({"mapping_type": "prefix"}, "m.json")[2] == ["m.json: mapping_type is 'prefix'; expected \"positional\""]
    bad = {"mapping_type": "positional", "positions": [{"field": "a", "map": {"10": 1}}, {"field": "b"}],
           "defaults": {"b": 1}}
    assert parse_label_map(bad, "m.json")[2] == [
        "m.json: positions[0] (a) map key(s) '10' must be one character each: every character of the code is one position",
        "m.json: positions[1] must be {\"field\": a name, \"map\": {code: value, ...}}"]


def test_check_messages():
    ok = swift_row("1", ["a.png", "b.png"], "q", "a", "")
    assert check_messages(ok) == []
    assert check_messages({**ok, "images": ["a.png"]}) == [
        "2 <image> tag(s) in the messages but 1 image(s); expected one <image> tag per image"]
    empty = swift_row("1", [], "q", " ", "")
    assert check_messages(empty) == ["empty answer: expected a non-empty assistant message last"]
    assert check_messages({"messages": [{"role": "bot", "content": 3}], "images": []}) == [
        "messages[0]: role 'bot'; expected one of system, user, assistant, tool, tool_call, tool_response",
        "messages[0]: content must be text", "empty answer: expected a non-empty assistant message last"]


def test_resolve_image_keeps_paths_inside_the_data_folder(tmp_path):
    place = Place(tmp_path, tmp_path / "data" / "raw")
    (place.raw_dir / "images").mkdir(parents=True)
    Image.new("L", (8, 8)).save(place.raw_dir / "images" / "a.png")
    assert resolve_image("images/a.png", place)[1] == "data/raw/images/a.png"
    assert resolve_image("./images/../images/a.png", place)[1] == "data/raw/images/a.png"
    assert resolve_image("images\\a.png", place)[1] == "data/raw/images/a.png"     # written on Windows
    assert resolve_image(str(place.raw_dir / "images" / "a.png"), place)[1] == "data/raw/images/a.png"
    assert resolve_image("../../etc/passwd", place) == (
        "image path '../../etc/passwd' escapes the data folder data/raw; expected a path inside it")
    assert resolve_image("/etc/passwd", place) == (
        "image path '/etc/passwd' escapes the data folder data/raw; expected a path inside it")
    assert resolve_image("images/b.png", place) == "image not found: data/raw/images/b.png"
    assert resolve_image("https://x.org/a.png", place).startswith("image 'https://x.org/a.png' is a URL")


def test_inspect_image(tmp_path):
    Image.new("RGB", (640, 480), (10, 200, 30)).save(tmp_path / "a.jpg", quality=95)
    info = inspect_image(tmp_path / "a.jpg", "qwen3_vl")
    assert (info.width, info.height) == (640, 480) and len(info.digest) == 16
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    assert inspect_image(tmp_path / "cut.jpg", "qwen3_vl").startswith(
        "is truncated or corrupt (OSError: image file is truncated")
    assert pixel_budget({"model_type": "qwen3_vl", "image_max_token_num": 1024}) == 1024 * 32 * 32
    assert pixel_budget({"model_type": "qwen2_5_vl", "image_max_token_num": 4}) == 4 * 28 * 28


def png_with_corrupt_pixels(path):
    """A PNG whose chunks and CRCs are all sound, with garbage in its compressed pixel data: verify() passes it."""
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(path)
    corrupt_png_pixels(path)
    with Image.open(path) as im:
        im.verify()                                   # what build used to check


@pytest.mark.parametrize("make, message", [
    (png_with_corrupt_pixels, "is truncated or corrupt"),
    (lambda p: Image.fromarray(np.full((64, 64), 46003, dtype=np.uint16)).save(p),
     "is 16-bit (Pillow mode I;16): ms-swift would clip it to 8 bits and train on solid white"),
    (lambda p: Image.new("L", (1, 1)).save(p), "is 1x1 px, too small to be read as an image"),
    (lambda p: Image.new("L", (16, 3300)).save(p), "has an aspect ratio of 206.2 (16x3300 px)"),
])
def test_images_the_trainer_cannot_use_are_named(tmp_path, make, message):
    make(tmp_path / "x.png")
    assert message in inspect_image(tmp_path / "x.png", "qwen3_vl")


def test_imbalance_warning():
    assert imbalance_warning(['"a"'] * 10 + ['"b"'], "status", 10.0) is None
    assert imbalance_warning(['"a"'] * 11 + ['"b"'], "status", 10.0) == (
        "class imbalance in 'status': \"a\" has 11.0x the samples of \"b\" (over data.imbalance_ratio 10.0); "
        "counts: \"a\" 11, \"b\" 1")


@pytest.mark.parametrize("fixture,labels,fmt", [("table", "labels.csv", "table"), ("filename", "images", "filename"),
                                                ("qa_jsonl", "train.jsonl", "qa_jsonl"),
                                                ("swift_jsonl", "data.jsonl", "swift_jsonl")])
def test_detect_format(fixture, labels, fmt):
    assert detect(FIXTURES / fixture / "data" / labels) == fmt


def rotated_jpeg(orientation: int) -> bytes:
    """A phone's JPEG: pixels stored landscape, EXIF telling viewers to rotate them (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    b = io.BytesIO()
    Image.new("RGB", (80, 40), (200, 30, 30)).save(b, "JPEG", exif=exif.tobytes())
    return b.getvalue()


def test_an_image_viewers_rotate_is_refused_at_build_and_by_the_server(tmp_path):
    """ms-swift reads the pixels as stored: a JPEG with EXIF orientation 6 was trained on sideways, with no word."""
    from stages.serving.checks import image_problems

    (tmp_path / "phone.jpg").write_bytes(rotated_jpeg(6))
    assert inspect_image(tmp_path / "phone.jpg", "qwen3_vl").startswith(
        "has EXIF orientation 6: viewers show it rotated or flipped, but ms-swift reads the pixels as stored")
    (tmp_path / "upright.jpg").write_bytes(rotated_jpeg(1))
    assert not isinstance(inspect_image(tmp_path / "upright.jpg", "qwen3_vl"), str)
    url = "data:image/jpeg;base64," + base64.b64encode(rotated_jpeg(8)).decode()
    problems = image_problems([url], "qwen3_vl")
    assert len(problems) == 1 and problems[0].startswith("image 1 of 1: has EXIF orientation 8")
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "stages.commands.predict", str(tmp_path / "phone.jpg"),
                        str(tmp_path / "upright.jpg")], cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert r.returncode == 2 and "phone.jpg has EXIF orientation 6" in r.stderr and "Traceback" not in r.stderr
