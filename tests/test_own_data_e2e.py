"""Your own data end to end: the README's own-data commands, exactly as written there, on each format's example
folder (tests/fixtures/<format>/data) and on caption data sets in English and in Chinese, through the real pipeline
at tiny size: dvc add, dvc exp run (build, swift sft, swift infer, score, compare)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.workspace import ROOT, clone, sh

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CAPTIONS = {
    "en": ["A red square on a white table.", "A green ball rolling on the grass.", "A blue car parked by the road.",
           "A yellow flower in a small pot.", "A black cat sleeping on a bed.", "A white dog running on the beach.",
           "An orange sunset over the sea.", "A purple book lying on a desk.", "A brown horse standing in a field.",
           "A grey bird sitting on a wire.", "A pink cake with three candles.", "A silver spoon next to a cup."],
    "zh": ["白色桌子上的一个红色方块。", "一个绿色的球在草地上滚动。", "路边停着一辆蓝色的汽车。", "小花盆里的一朵黄色的花。",
           "一只黑猫在床上睡觉。", "一只白狗在海滩上奔跑。", "大海上空橙色的日落。", "书桌上放着一本紫色的书。",
           "一匹棕色的马站在田野里。", "一只灰色的鸟停在电线上。", "一个插着三根蜡烛的粉色蛋糕。", "杯子旁边的一把银色勺子。"],
}


def readme_commands() -> tuple[str, dict[str, str]]:
    """The README's own-data block: the `dvc add` line and, per format, its `dvc exp run` line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Your own data"):text.index("## A real model")]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return lines[0], {re.search(r"data\.format=(\w+)", line).group(1): line for line in lines[1:]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return clone(tmp_path_factory.mktemp("own_data"))


def run_readme(repo: Path, folder: Path, fmt: str) -> str:
    """Copy `folder` to data/mine and run the README's lines for `fmt` on it, each from the committed params."""
    add, runs = readme_commands()
    sh("git", "checkout", "params.yaml", cwd=repo)
    mine = repo / "data" / "mine"
    shutil.rmtree(mine, ignore_errors=True)
    shutil.copytree(folder, mine)
    sh("bash", "-c", add, cwd=repo)
    done = sh("bash", "-c", runs[fmt], cwd=repo)
    return done.stdout + done.stderr


def results(repo: Path) -> tuple[dict, dict, int]:
    schema = json.loads((repo / "data/dataset/fields.json").read_text(encoding="utf-8"))
    details = json.loads((repo / "metrics/details/finetuned.json").read_text(encoding="utf-8"))
    n_test = len((repo / "data/dataset/test.jsonl").read_text(encoding="utf-8").splitlines())
    return schema, details, n_test


@pytest.mark.parametrize("fmt, kind, types", [
    ("table", "json", {"direction": "categorical", "distance": "numeric"}),
    ("filename", "json", {"status": "categorical", "sub_type": "categorical", "is_night_mode": "categorical",
                          "confidence": "numeric", "reasoning": "categorical"}),
    ("qa_jsonl", "text", {"answer": "categorical"}),      # a few answers, one of them a JSON object: plain text
    ("swift_jsonl", "text", {"answer": "categorical"}),
])
def test_the_readme_command_of_each_format_runs_the_pipeline(repo, fmt, kind, types):
    log = run_readme(repo, ROOT / "tests" / "fixtures" / fmt / "data", fmt)
    schema, details, n_test = results(repo)
    assert schema["answer_kind"] == kind and {f: s["type"] for f, s in schema["fields"].items()} == types, log
    assert details["n"] == n_test and set(details["fields"]) == set(types)
    assert (repo / "metrics/compare/parse_rate.json").is_file() and (repo / "data/dataset/dropped.jsonl").read_text() == ""
    if fmt == "table":
        assert schema["fields"]["distance"]["tolerance"] == 1          # the default tolerance, where it fits
    if fmt == "filename":
        assert "score.tolerance.distance: no answer has a field 'distance', so it is not used" in log


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_captions_are_trained_inferred_and_scored_as_text(repo, tmp_path, lang):
    folder = tmp_path / "captions"
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, caption in enumerate(CAPTIONS[lang]):
        Image.new("RGB", (32, 32), (20 * i % 256, 255 - 20 * i, 90 * i % 256)).save(folder / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "question": "Describe the image.", "answer": caption})
    (folder / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                        encoding="utf-8")
    log = run_readme(repo, folder, "qa_jsonl")
    schema, details, n_test = results(repo)
    assert schema == {"answer_kind": "text", "fields": {"answer": {"type": "text", "tolerance": 0}}}, log
    answer = details["fields"]["answer"]
    for measure in ("bleu", "chrf", "rouge_l", "cer"):
        assert isinstance(answer[measure], float) and set(answer[f"{measure}_ci95"]) == {"lower", "upper"}
    assert json.loads((repo / "metrics/compare/answer_chrf.json").read_text())["finetuned"] == answer["chrf"]
    test_answers = [json.loads(line)["messages"][-1]["content"] for line in
                    (repo / "data/dataset/test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert n_test == len(test_answers) and all(a in CAPTIONS[lang] for a in test_answers)   # no JSON wrapper


def test_rows_longer_than_max_length_stop_training_instead_of_being_swapped(repo):
    """ms-swift replaces a row it cannot encode by another one unless --strict: the train stage passes it, so a
    max_length too short for the data is an error, not a silently different training set."""
    run_readme(repo, ROOT / "tests" / "fixtures" / "table" / "data", "table")
    _, runs = readme_commands()
    done = sh("bash", "-c", runs["table"] + " -S train.max_length=32", cwd=repo, check=False)
    assert done.returncode != 0
    assert "max_length" in done.stdout + done.stderr and "failed to reproduce 'train'" in done.stderr
