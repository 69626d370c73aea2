"""Every kind of bad input gets a message naming the file, the row/line, what is wrong and what was expected,
all problems of a run in one error; and the warnings (large images, leakage, imbalance). Real files in tmp_path."""
import io
import itertools
import json

import pytest
from PIL import Image

from stages.build import DataError, build_dataset
from stages.common import PARAMS_FILE
from stages.params.load import read_yaml
from stages.params.tree import merge
from stages.params.schema import Data

MODEL = {"model_type": "qwen3_vl", "image_max_token_num": 4}
SCORE = read_yaml(PARAMS_FILE)["score"]
_colours = itertools.count(1)


def cfg(**over) -> dict:
    """params.yaml's data section (the one source of defaults) with this test's folder, columns and `over`."""
    base = merge(read_yaml(PARAMS_FILE)["data"], {
        "raw_dir": "data/raw", "labels": "labels.csv", "columns": {"images": ["image"], "answer": ["label"]},
        "prompt": "What is it?", "val_ratio": 0.0, "test_ratio": 0.25})
    return Data.model_validate(merge(base, over)).model_dump()


class Raw:
    """data/raw in a temporary repository root; `raw / name` is a path in it, `raw.image(name)` writes a
    distinct 8x8 image there and returns the name."""

    def __init__(self, root):
        self.root, self.dir = root, root / "data" / "raw"
        (self.dir / "images").mkdir(parents=True)

    def __truediv__(self, name):
        return self.dir / name

    def image(self, name: str, size=(8, 8)) -> str:
        k = next(_colours)
        Image.new("RGB", size, (k % 256, 7 * k % 256, 13 * k % 256)).save(self.dir / name)
        return name


@pytest.fixture
def raw(tmp_path):
    return Raw(tmp_path)


def problems(raw, **over) -> list[str]:
    with pytest.raises(DataError) as e:
        build_dataset(cfg(**over), MODEL, SCORE, 0, io.StringIO(), raw.root)
    return str(e.value).splitlines()


def table(raw, *rows: str, name="labels.csv", header="id,image,label") -> None:
    (raw / name).write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def four_good_rows(raw) -> list[str]:
    return [f"g{i},{raw.image(f'images/g{i}.png')},ok" for i in range(4)]


def test_missing_image(raw):
    table(raw, *four_good_rows(raw), "x,images/nope.png,ok")
    assert problems(raw) == ["1 problem in the input data (nothing was written):",
                             "  data/raw/labels.csv:6: image not found: data/raw/images/nope.png"]


def test_truncated_and_corrupt_images(raw):
    for name in ("a.png", "b.jpg"):
        Image.new("RGB", (64, 64), (9, 9, 9)).save(raw / "images" / name)
        data = (raw / "images" / name).read_bytes()
        (raw / "images" / name).write_bytes(data[:len(data) - 20])
    table(raw, *four_good_rows(raw), "a,images/a.png,ok", "b,images/b.jpg,ok")
    found = problems(raw)
    assert found[1].startswith("  data/raw/labels.csv:6: image data/raw/images/a.png is truncated or corrupt (OSError: ")
    assert found[2].startswith("  data/raw/labels.csv:7: image data/raw/images/b.jpg is truncated or corrupt "
                               "(OSError: image file is truncated")


def test_unsupported_and_zero_size_images(raw):
    (raw / "images" / "notes.png").write_text("not an image", encoding="utf-8")
    (raw / "images" / "empty.png").write_bytes(b"")
    table(raw, *four_good_rows(raw), "n,images/notes.png,ok", "e,images/empty.png,ok")
    assert problems(raw)[1:] == [
        "  data/raw/labels.csv:6: image data/raw/images/notes.png is not an image in a supported format; "
        "expected JPEG, PNG, WEBP, BMP, GIF or TIFF",
        "  data/raw/labels.csv:7: image data/raw/images/empty.png is empty (0 bytes)"]


def test_unsupported_labels_file(raw):
    (raw / "labels.xlsx").write_bytes(b"PK\x03\x04")
    assert problems(raw, labels="labels.xlsx")[1:] == [
        "  data/raw/labels.xlsx: unsupported labels format '.xlsx'; expected .csv, .tsv or .jsonl "
        "(export spreadsheets as 'CSV UTF-8')"]


def test_paths_escaping_the_data_folder(raw):
    table(raw, *four_good_rows(raw), "a,../../etc/passwd,ok", "b,/etc/passwd,ok")
    assert problems(raw)[1:] == [
        "  data/raw/labels.csv:6: image path '../../etc/passwd' escapes the data folder data/raw; expected a path inside it",
        "  data/raw/labels.csv:7: image path '/etc/passwd' escapes the data folder data/raw; expected a path inside it"]


def test_a_link_out_of_the_data_folder_is_refused(raw, tmp_path_factory):
    """A symbolic link inside data/raw to a file elsewhere passed the path check, which reads only the names."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "x.png"
    Image.new("RGB", (8, 8)).save(elsewhere)
    (raw / "images/link.png").symlink_to(elsewhere)
    (raw / "images/inside.png").symlink_to(raw / raw.image("images/target.png"))   # a link that stays inside is fine
    table(raw, *four_good_rows(raw), "a,images/link.png,ok", "b,images/inside.png,ok")
    assert problems(raw)[1:] == [
        f"  data/raw/labels.csv:6: image data/raw/images/link.png is a link to {elsewhere}, outside the data folder "
        "data/raw; expected a file inside it (copy it in)"]


def test_image_tag_count_must_match_the_images(raw):
    a, b = raw.image("images/a.png"), raw.image("images/b.png")
    (raw / "qa.jsonl").write_text(
        f'{{"images": ["{a}", "{b}"], "question": "Is <image> sharper?", "answer": "yes"}}\n', encoding="utf-8")
    assert problems(raw, format="qa_jsonl", labels="qa.jsonl")[1] == (
        "  data/raw/qa.jsonl:1: 1 <image> tag(s) in the messages but 2 image(s); expected one <image> tag per image")
    (raw / "s.jsonl").write_text(f'{{"messages": [{{"role": "user", "content": "What?"}}, '
                                 f'{{"role": "assistant", "content": "A."}}], "images": ["{a}"]}}\n', encoding="utf-8")
    assert problems(raw, format="swift_jsonl", labels="s.jsonl")[1] == (
        "  data/raw/s.jsonl:1: 0 <image> tag(s) in the messages but 1 image(s); expected one <image> tag per image")


def test_empty_answers(raw):
    table(raw, *four_good_rows(raw), f"e,{raw.image('images/e.png')},")
    assert problems(raw)[1] == ("  data/raw/labels.csv:6: empty answer field(s) label; "
                                "expected a value in every answer column")
    (raw / "qa.jsonl").write_text(f'{{"image": "{raw.image("images/q.png")}", "answer": " "}}\n', encoding="utf-8")
    assert problems(raw, format="qa_jsonl", labels="qa.jsonl")[1] == (
        "  data/raw/qa.jsonl:1: empty answer: expected a non-empty assistant message last")


def test_label_values_missing_from_the_label_map(raw):
    (raw / "label_map.json").write_text('{"mapping_type": "positional", "positions": ['
                                        '{"field": "status", "map": {"0": "ok", "1": "leak"}},'
                                        '{"field": "night", "map": {"0": false, "1": true}}]}', encoding="utf-8")
    for name in ("00_a.png", "10_b.png", "01_c.png", "11_d.png", "21_e.png", "1_f.png"):
        raw.image(f"images/{name}")
    assert problems(raw, format="filename", labels="images")[1:] == [
        "  data/raw/images/1_f.png: label code '1' has 1 character(s); expected 2, one per position of "
        "label_map.json (status, night)",
        "  data/raw/images/21_e.png: label value '2' at position 1 (status) is not in label_map.json; expected one of 0, 1"]


def test_duplicate_ids(raw):
    table(raw, *four_good_rows(raw), f"g1,{raw.image('images/d.png')},ok")
    assert problems(raw)[1] == "  data/raw/labels.csv:6: duplicate id 'g1' (first at data/raw/labels.csv:3); expected unique ids"


def test_malformed_csv_and_json_lines(raw):
    table(raw, *four_good_rows(raw), "x,images/x.png,ok,extra", "y")
    assert problems(raw)[1:] == [
        "  data/raw/labels.csv:6: malformed row: 4 fields, expected 3 like the header (id, image, label); "
        "quote values that contain ','",
        "  data/raw/labels.csv:7: malformed row: 1 fields, expected 3 like the header (id, image, label); "
        "quote values that contain ','"]
    (raw / "qa.jsonl").write_text('{"image": "a.png", "answer": "x"}\n{"image": "b.png" "answer": "y"}\n[1]\n',
                                  encoding="utf-8")
    found = problems(raw, format="qa_jsonl", labels="qa.jsonl")
    assert "  data/raw/qa.jsonl:2: malformed JSON (Expecting ',' delimiter at column 19); expected one JSON object per line" in found
    assert "  data/raw/qa.jsonl:3: expected a JSON object, got a JSON list" in found


def test_non_utf8_text(raw):
    """A file saved by Chinese Excel as plain 'CSV' (GBK): one problem for the file, not one per line, naming GBK."""
    rows = "".join(f"{i},images/a.png,焦点\n" for i in range(30))
    (raw / "labels.csv").write_bytes(("id,image,label\n" + rows).encode("gbk"))
    found = problems(raw)
    assert found == [
        "1 problem in the input data (nothing was written):",
        "  data/raw/labels.csv:2: not UTF-8 text (byte 0xbd at byte 16 of the line; 30 lines in all); it is most "
        "likely gb18030 (GBK), as Excel saves a plain 'CSV' on a Chinese system; convert it with `iconv -f GB18030 "
        "-t UTF-8 labels.csv > utf8-labels.csv`, or save it from Excel as 'CSV UTF-8'; expected UTF-8"]
    (raw / "labels.csv").write_bytes(b"id,image,label\n1,images/a.png,\xff\xfe\xff\n")
    assert problems(raw)[1].startswith("  data/raw/labels.csv:2: not UTF-8 text (byte 0xff at byte 16 of the line; "
                                       "1 line in all)")


def test_empty_dataset(raw):
    table(raw)
    assert problems(raw)[1] == "  data/raw/labels.csv: no samples; expected at least one (format table)"
    (raw / "label_map.json").write_text('{"mapping_type": "positional", "positions": [{"field": "a", "map": {"0": 0}}]}',
                                        encoding="utf-8")
    assert problems(raw, format="filename", labels="images")[1] == (
        "  data/raw/images: no samples; expected at least one (format filename)")


def test_every_problem_at_once(raw):
    table(raw, *four_good_rows(raw), "g0,images/nope.png,", "z,../x.png,ok,4")
    found = problems(raw)   # a malformed row is one more problem; every other row is still checked
    assert found == [
        "4 problems in the input data (nothing was written):",
        "  data/raw/labels.csv:7: malformed row: 4 fields, expected 3 like the header (id, image, label); "
        "quote values that contain ','",
        "  data/raw/labels.csv:6: empty answer field(s) label; expected a value in every answer column",
        "  data/raw/labels.csv:6: duplicate id 'g0' (first at data/raw/labels.csv:2); expected unique ids",
        "  data/raw/labels.csv:6: image not found: data/raw/images/nope.png"]
    table(raw, *four_good_rows(raw), "g0,images/nope.png,", "z,../x.png,ok")
    assert problems(raw) == [
        "4 problems in the input data (nothing was written):",
        "  data/raw/labels.csv:6: empty answer field(s) label; expected a value in every answer column",
        "  data/raw/labels.csv:6: duplicate id 'g0' (first at data/raw/labels.csv:2); expected unique ids",
        "  data/raw/labels.csv:6: image not found: data/raw/images/nope.png",
        "  data/raw/labels.csv:7: image path '../x.png' escapes the data folder data/raw; expected a path inside it"]


def test_params_pointing_at_nothing(raw):
    table(raw, *four_good_rows(raw))
    assert problems(raw, labels="missing.csv") == [
        "1 problem in the data params (nothing was written):",
        "  data.labels: data/raw/missing.csv not found (paths are relative to data.raw_dir)"]
    assert problems(raw, raw_dir="data/other")[1] == "  data.raw_dir 'data/other': expected an existing folder inside the repository"
    assert problems(raw, test_labels="../../x.csv")[1] == (
        "  data.test_labels '../../x.csv' is outside data.raw_dir data/raw; keep every input inside it")
    assert problems(raw, format="filename", labels="images")[1] == (
        "  data/raw/label_map.json: label map not found; expected a positional label_map.json (data.label_map)")


def test_stratify_class_too_small(raw):
    table(raw, *four_good_rows(raw), f"r,{raw.image('images/r.png')},rare")
    assert problems(raw, stratify="label")[1] == (
        "  data.stratify 'label': too few samples to split every class into train/test (val_ratio 0.0, test_ratio 0.25), "
        "each part needs one: class \"rare\" has 1 sample; add samples, merge classes, or set data.stratify: \"\"")


def test_warnings_large_images_leakage_and_imbalance(raw):
    rows = [f"g{i},{raw.image(f'images/g{i}.png')},ok" for i in range(20)]
    raw.image("images/big.png", size=(300, 200))
    (raw / "images" / "copy.png").write_bytes((raw / "images" / "g0.png").read_bytes())
    table(raw, *rows, "big,images/big.png,rare", "b2,images/copy.png,rare")
    spool = io.StringIO()
    parts, _, _, warnings = build_dataset(cfg(stratify="label", test_ratio=0.3, imbalance_ratio=5.0), MODEL, SCORE, 0,
                                          spool, raw.root)
    assert len(spool.getvalue().splitlines()) == 22 and [len(parts[k]) for k in ("train", "val", "test")] == [15, 0, 7]
    assert warnings[0] == ("1 image(s) exceed the pixel budget model.image_max_token_num 4 x 32x32 px = 4,096 px "
                           "and will be downscaled to it by ms-swift (largest: data/raw/images/big.png, 300x200 px); "
                           "raise model.image_max_token_num to keep more detail")
    assert warnings[1] == ("1 image(s) appear in more than one split (identical bytes), so test results may be "
                           "optimistic: data/raw/images/copy.png, data/raw/images/g0.png in test and train")
    assert warnings[2] == ("class imbalance in 'label': \"ok\" has 10.0x the samples of \"rare\" "
                           "(over data.imbalance_ratio 5.0); counts: \"ok\" 20, \"rare\" 2")


def test_qa_rows_with_unknown_or_conflicting_keys(raw):
    a = raw.image("images/a.png")
    (raw / "qa.jsonl").write_text(f'{{"image": "{a}", "images": ["{a}"], "querry": "q", "answer": "x"}}\n'
                                  '{"question": 3, "answer": "x"}\n', encoding="utf-8")
    assert problems(raw, format="qa_jsonl", labels="qa.jsonl")[1:] == [
        "  data/raw/qa.jsonl:1: unknown key(s) querry; expected id, image, images, question, answer, system",
        "  data/raw/qa.jsonl:1: both 'image' and 'images'; expected one of them",
        "  data/raw/qa.jsonl:2: no image; expected 'image' (a path) or 'images' (a list of paths)",
        "  data/raw/qa.jsonl:2: question must be text"]


def test_swift_rows_pass_through_with_their_other_keys(raw):
    rows = [f'{{"id": "r{i}", "messages": [{{"role": "user", "content": "<image>Q"}}, {{"role": "assistant", '
            f'"content": "A{i}"}}], "images": ["{raw.image(f"images/r{i}.png")}"], "channel": "cam-{i}"}}' for i in range(4)]
    (raw / "s.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spool = io.StringIO()
    build_dataset(cfg(format="swift_jsonl", labels="s.jsonl"), MODEL, SCORE, 0, spool, raw.root)
    assert spool.getvalue().splitlines()[0] == (
        '{"id": "r0", "messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A0"}], '
        '"images": ["data/raw/images/r0.png"], "channel": "cam-0"}')


@pytest.mark.parametrize("text,expected", [("Be brief.\n", "Be brief."), ('{"system_prompt": "Be JSON."}', "Be JSON."),
                                           ('"Be quoted."', "Be quoted.")])
def test_system_file_plain_text_or_json(raw, text, expected):
    table(raw, *four_good_rows(raw))
    (raw / "prompt.json").write_text(text, encoding="utf-8")
    spool = io.StringIO()
    build_dataset(cfg(system_file="prompt.json"), MODEL, SCORE, 0, spool, raw.root)
    assert json.loads(spool.getvalue().splitlines()[0])["messages"][0] == {"role": "system", "content": expected}


def test_system_file_problems(raw):
    table(raw, *four_good_rows(raw))
    (raw / "prompt.json").write_text('{"prompt": "x"}', encoding="utf-8")
    assert problems(raw, system_file="prompt.json")[1] == (
        '  data/raw/prompt.json: JSON, but not {"system_prompt": "..."}; expected that or plain text')


def test_filename_format_ids_must_be_unique_across_suffixes(raw):
    (raw / "label_map.json").write_text('{"mapping_type": "positional", "positions": [{"field": "a", "map": {"0": 0, "1": 1}}]}',
                                        encoding="utf-8")
    for name in ("0_a.png", "0_a.jpg", "1_b.png", "1_c.png"):
        raw.image(f"images/{name}")
    (raw / "images" / ".DS_Store").write_bytes(b"\0")   # hidden: skipped
    assert problems(raw, format="filename", labels="images")[1:] == [
        "  data/raw/images/0_a.png: duplicate id '0_a' (first at data/raw/images/0_a.jpg); expected unique ids"]


def test_filename_fixed_test_folder_inside_the_image_folder_is_not_trained_on(raw):
    (raw / "label_map.json").write_text('{"mapping_type": "positional", "positions": [{"field": "a", "map": {"0": 0, "1": 1}}]}',
                                        encoding="utf-8")
    (raw / "images" / "test").mkdir()
    for name in ("0_a.png", "1_b.png", "0_c.png", "test/1_d.png", "test/0_e.png"):
        raw.image(f"images/{name}")
    spool = io.StringIO()
    parts, *_ = build_dataset(cfg(format="filename", labels="images", test_labels="images/test", val_ratio=0.3),
                              MODEL, SCORE, 0, spool, raw.root)
    ids = [json.loads(line)["id"] for line in spool.getvalue().splitlines()]
    assert ids == ["0_a", "0_c", "1_b", "0_e", "1_d"]
    assert sorted(ids[i] for i in parts["test"]) == ["0_e", "1_d"]


# --- the issue's own-data cases: every bad line at once, skipping bad rows --------------------------------------

def four_bad_lines(raw) -> None:
    """Four good rows, then a missing image, a path escaping the folder, an empty label and an extra field."""
    table(raw, *four_good_rows(raw), "b1,images/nope.png,ok", "b2,../../etc/passwd,ok",
          f"b3,{raw.image('images/b3.png')},", f"b4,{raw.image('images/b4.png')},ok,extra")


def test_four_bad_lines_of_a_csv_are_reported_in_one_run(raw):
    four_bad_lines(raw)
    assert problems(raw) == [
        "4 problems in the input data (nothing was written):",
        "  data/raw/labels.csv:9: malformed row: 4 fields, expected 3 like the header (id, image, label); "
        "quote values that contain ','",
        "  data/raw/labels.csv:6: image not found: data/raw/images/nope.png",
        "  data/raw/labels.csv:7: image path '../../etc/passwd' escapes the data folder data/raw; expected a path "
        "inside it",
        "  data/raw/labels.csv:8: empty answer field(s) label; expected a value in every answer column"]


def test_skip_keeps_exactly_the_good_rows_and_lists_the_dropped_ones(raw):
    four_bad_lines(raw)
    spool = io.StringIO()
    parts, schema, bad, warnings = build_dataset(cfg(on_error="skip"), MODEL, SCORE, 0, spool, raw.root)
    rows = [json.loads(line) for line in spool.getvalue().splitlines()]
    kept = sorted(rows[i]["id"] for idx in parts.values() for i in idx)
    assert kept == ["g0", "g1", "g2", "g3"]
    assert list(bad) == ["data/raw/labels.csv:9", "data/raw/labels.csv:6", "data/raw/labels.csv:7",
                         "data/raw/labels.csv:8"]
    assert bad["data/raw/labels.csv:6"] == ["data/raw/labels.csv:6: image not found: data/raw/images/nope.png"]
    assert schema == {"answer_kind": "text", "fields": {"answer": {"type": "categorical", "tolerance": 0}}}
    assert warnings == ["score.tolerance.distance: no answer has a field 'distance', so it is not used "
                        "(answer fields: answer)"]


def test_skip_still_stops_on_a_problem_of_the_whole_file(raw):
    table(raw, *four_good_rows(raw), header="id,picture,label")
    assert problems(raw, on_error="skip")[1] == "  data/raw/labels.csv: missing column(s) image; the table has id, picture, label"


def test_a_python_dict_among_json_answers_is_a_build_error_with_its_line(raw):
    a, b = raw.image("images/a.png"), raw.image("images/b.png")
    (raw / "qa.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [
            {"image": a, "answer": {"animal": "cat"}}, {"image": b, "answer": "{'animal': 'dog'}"},
            {"image": a, "answer": {"animal": "bird"}}, {"image": b, "answer": {"animal": "cow"}}]), encoding="utf-8")
    found = problems(raw, format="qa_jsonl", labels="qa.jsonl")
    assert found[0] == "1 problem in the input data (nothing was written):"
    assert found[1].startswith("  data/raw/qa.jsonl:2: the answer is not a JSON object (it looks like one but is not "
                               "valid JSON: Expecting property name enclosed in double quotes at column 2)")


def test_a_tolerance_on_a_text_field_is_a_build_error(raw):
    table(raw, *four_good_rows(raw))
    score = {**SCORE, "tolerance": {"label": 1}}
    with pytest.raises(DataError, match=r"score\.tolerance\.label: not a numeric field; numeric fields: none"):
        build_dataset(cfg(answer_kind="json"), MODEL, score, 0, io.StringIO(), raw.root)


def test_skip_does_not_cut_a_file_short_at_a_quoting_error(raw):
    """Bad quoting ends the reading of the file: under skip that is not one dropped row but a stop."""
    table(raw, *four_good_rows(raw), 'x,"images/a.png"b,ok', *[f"h{i},{raw.image(f'images/h{i}.png')},ok" for i in range(3)])
    found = problems(raw, on_error="skip")
    assert found[0] == "1 problem in the input data (nothing was written):"
    assert "so the rest of the file cannot be read" in found[1]


def test_skip_stops_when_a_whole_test_file_is_dropped(raw):
    table(raw, *four_good_rows(raw))
    table(raw, "t1,images/nope.png,ok", name="test.csv")
    found = problems(raw, on_error="skip", test_labels="test.csv")
    assert found[1].startswith("  data.test_labels: no rows left after dropping 1 row with problems")


def test_a_swift_row_without_messages_is_a_listed_problem_not_a_crash(raw):
    (raw / "s.jsonl").write_text('{"messages": [], "images": []}\n{"messages": ["hi"], "images": []}\n',
                                 encoding="utf-8")
    found = problems(raw, format="swift_jsonl", labels="s.jsonl", stratify="label")
    assert "  data/raw/s.jsonl:1: 'messages' must be a non-empty list of {\"role\": ..., \"content\": ...}" in found


def test_one_numeric_answer_column_stays_a_typed_json_field(raw):
    table(raw, *[f"n{i},{raw.image(f'images/n{i}.png')},{i}" for i in range(4)], header="id,image,count")
    spool = io.StringIO()
    _, schema, _, _ = build_dataset(cfg(columns={"images": ["image"], "answer": ["count"]}), MODEL, SCORE, 0, spool,
                                    raw.root)
    assert schema == {"answer_kind": "json", "fields": {"count": {"type": "numeric", "tolerance": 0}}}
    assert json.loads(spool.getvalue().splitlines()[1])["messages"][-1]["content"] == '{"count": 1}'


def test_a_repeated_column_name_and_a_blank_line(raw):
    table(raw, *four_good_rows(raw), "   ", header="id,image,label")
    assert build_dataset(cfg(), MODEL, SCORE, 0, io.StringIO(), raw.root)[0]   # the blank line is skipped
    table(raw, *four_good_rows(raw), header="id,label,label")
    assert "  data/raw/labels.csv:1: column name(s) label appear more than once in the header; expected each column " \
           "once" in problems(raw, columns={"images": ["label"], "answer": ["label"]})


def test_a_missing_value_marker_in_a_numeric_column_is_named_not_turned_into_text(raw):
    """One NaN cell used to make the whole distance column text, and the pipeline failed only at score."""
    rows = [f"g{i},{raw.image(f'images/g{i}.png')},+,{i}" for i in range(4)]
    table(raw, *rows, f"x,{raw.image('images/x.png')},-,NaN", f"y,{raw.image('images/y.png')},-,#DIV/0!",
          header="id,image,direction,distance")
    found = problems(raw, columns={"images": ["image"], "answer": ["direction", "distance"]})
    assert found == ["1 problem in the input data (nothing was written):",
                     "  data/raw/labels.csv: column distance holds numbers, but line(s) 6 ('NaN'), 7 ('#DIV/0!') hold a "
                     "missing or non-finite value; expected a number in every row"]


def test_nan_or_infinity_in_a_json_answer_is_refused(raw):
    """Python's json reads NaN and Infinity; as a training target no answer could ever match them."""
    a, b = raw.image("images/a.png"), raw.image("images/b.png")
    (raw / "qa.jsonl").write_text("".join(line + "\n" for line in [
        f'{{"image": "{a}", "answer": {{"distance": 1}}}}', f'{{"image": "{b}", "answer": {{"distance": Infinity}}}}',
        f'{{"image": "{a}", "answer": {{"distance": 2}}}}', f'{{"image": "{b}", "answer": {{"distance": NaN}}}}']),
        encoding="utf-8")
    found = problems(raw, format="qa_jsonl", labels="qa.jsonl")
    assert found[1:] == [f"  data/raw/qa.jsonl:{n}: the answer's field(s) distance are NaN or Infinity, which JSON does "
                         "not allow and no model answer can match; expected a finite number" for n in (2, 4)]


def test_tables_from_other_locales_are_read_or_named(raw):
    """A semicolon-delimited CSV (Excel where the decimal mark is a comma), header names with spaces around them and a
    file name in the other Unicode form (macOS writes NFD) are read as meant; a decimal comma is named with its lines."""
    import unicodedata

    name = unicodedata.normalize("NFD", "images/café.png")                 # on disk decomposed, in the table composed
    raw.image(name)
    rows = [f"g{i};{raw.image(f'images/g{i}.png')};{i}" for i in range(4)] + ["c;images/café.png;5"]
    table(raw, *rows, header="id ; image ; label")
    stream = io.StringIO()
    build_dataset(cfg(), MODEL, SCORE, 0, stream, raw.root)
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(written) == 5 and written[-1]["messages"][-1]["content"] == '{"label": 5}'   # typed: a number
    assert any(r["images"] == [f"data/raw/{name}"] for r in written)
    table(raw, *[f"g{i};images/g{i}.png;{i},5" for i in range(4)], "x;images/g0.png;7", header="id;image;label")
    said = problems(raw)
    assert ("  data/raw/labels.csv: column label holds numbers written with a comma (a decimal comma or a thousands "
            "separator), line(s) 2 ('0,5'), 3 ('1,5'), 4 ('2,5'), 5 ('3,5'); expected plain numbers with a decimal "
            "point (5.5, 1000): save the table with '.' as the decimal mark") in said, said


def test_an_inline_data_uri_is_named_as_such(raw):
    table(raw, *four_good_rows(raw), 'x,"data:image/png;base64,iVBORw0KGgo=",ok')
    assert problems(raw)[1].startswith("  data/raw/labels.csv:6: image 'data:image/png;base64,iVBORw0KGgo=' is a data: "
                                       "URI (the bytes inline); expected a file in the data folder")


def test_nan_in_a_jsonl_table_is_named_as_nan_not_as_empty(raw):
    lines = [json.dumps({"id": f"g{i}", "image": raw.image(f"images/g{i}.png"), "label": i}) for i in range(4)]
    (raw / "labels.jsonl").write_text("\n".join(lines + ['{"id": "x", "image": "images/g0.png", "label": NaN}']) + "\n",
                                      encoding="utf-8")
    said = problems(raw, labels="labels.jsonl")
    assert said[1:] == ["  data/raw/labels.jsonl:5: label is NaN, which JSON does not allow (Python's json writes it "
                        "for a missing number); expected a number"], said
