import os

import pytest

from stages.common import count
from stages.storage.atomic import atomic_dir, atomic_file


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    assert (dest / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "b").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_clears_what_a_killed_run_left(tmp_path):
    dest = tmp_path / "out"
    (tmp_path / ".out.tmp-dead").mkdir()          # kill -9 skips the cleanup
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert oct(os.stat(dest).st_mode & 0o777) == "0o755"


def test_atomic_file_for_tools_that_append(tmp_path):
    dest = tmp_path / "pred.jsonl"
    dest.write_text("old\n")
    with atomic_file(dest) as tmp:
        assert not tmp.exists()
        tmp.write_text("new\n")
    assert dest.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.jsonl"]


def test_count():
    assert count(1204, "sample") == "1,204 samples"
    assert count(1, "sample") == "1 sample"


def test_write_atomic_makes_an_ordinary_file_not_a_private_one(tmp_path):
    from stages.storage.atomic import write_atomic
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644      # mkstemp alone gives 0o600
