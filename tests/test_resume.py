"""train.resume: which earlier run is resumed (stages/training/resume.py), on real files."""
import json

from stages.train import inputs
from stages.training.resume import fingerprint, record, resume_from, write_record


def workspace(tmp_path):
    (tmp_path / "models/base").mkdir(parents=True)
    (tmp_path / "models/base/config.json").write_text("{}")
    (tmp_path / "data/dataset").mkdir(parents=True)
    (tmp_path / "data/raw").mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / f"data/dataset/{split}.jsonl").write_text(json.dumps({"images": ["data/raw/a.png"]}) + "\n")
    (tmp_path / "data/raw/a.png").write_bytes(b"png")
    return tmp_path / "models/checkpoints"


def this_run(root, argv=("swift", "sft", "--lora_rank", "8"), env=None):
    rows = [json.loads(line) for s in ("train", "val") for line in (root / f"data/dataset/{s}.jsonl").open()]
    return record(list(argv), env or {"IMAGE_MAX_TOKEN_NUM": "64"}, fingerprint(root, inputs(rows)))


def interrupted(work, run, steps=((5, True), (10, True), (15, False))):   # 15: killed while saving
    work.mkdir(parents=True, exist_ok=True)
    write_record(work, run)
    for step, complete in steps:
        (work / f"checkpoint-{step}").mkdir()
        if complete:
            (work / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")


def test_an_interrupted_run_resumes_from_its_newest_complete_checkpoint(tmp_path):
    work = workspace(tmp_path)
    assert resume_from(work, this_run(tmp_path)) == (None, "no record of an earlier run")
    interrupted(work, this_run(tmp_path))
    checkpoint, _ = resume_from(work, this_run(tmp_path))
    assert checkpoint.name == "checkpoint-10"
    assert set(this_run(tmp_path)["inputs"]) == {"models/base/config.json", "data/dataset/train.jsonl",
                                                 "data/dataset/val.jsonl", "data/raw/a.png"}


def test_a_finished_run_is_never_resumed(tmp_path):
    work = workspace(tmp_path)
    interrupted(work, this_run(tmp_path))
    write_record(work, {**this_run(tmp_path), "finished": True})
    assert resume_from(work, this_run(tmp_path)) == (None, "the last run finished")


def test_other_params_env_data_images_or_model_train_afresh(tmp_path):
    work = workspace(tmp_path)
    interrupted(work, this_run(tmp_path))
    assert resume_from(work, this_run(tmp_path, argv=("swift", "sft", "--lora_rank", "16")))[1] == \
        "the swift sft command line changed"
    assert resume_from(work, this_run(tmp_path, env={"IMAGE_MAX_TOKEN_NUM": "128"}))[1] == "the environment (IMAGE_MAX_TOKEN_NUM) changed"
    for changed in ("data/raw/a.png", "data/dataset/train.jsonl", "models/base/config.json"):
        original = (tmp_path / changed).read_bytes()
        (tmp_path / changed).write_bytes(b"x" + original if changed.endswith(".png") else original.replace(b"{", b"{ ", 1))
        assert resume_from(work, this_run(tmp_path)) == (None, f"1 input file(s) changed ({changed})")
        (tmp_path / changed).write_bytes(original)
    assert resume_from(work, this_run(tmp_path))[0].name == "checkpoint-10"


def test_no_complete_checkpoint_trains_afresh(tmp_path):
    work = workspace(tmp_path)
    interrupted(work, this_run(tmp_path), steps=((5, False),))
    assert resume_from(work, this_run(tmp_path)) == (None, "the last run saved no complete checkpoint")
