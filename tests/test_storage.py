"""Disk space and copies (stages/storage): copies that share nothing with a user's file, room for DVC's cache,
a full disk named from a tool's output. Real files and the real filesystem."""
import hashlib
import os
from pathlib import Path

from stages.storage.clone import clone_file, clone_tree
from stages.storage.space import LOW_SPACE, copy_needed, dvc_cache, full_disk_hint, room_problem, room_to_save


def test_a_clone_shares_no_data_with_its_source(tmp_path):
    """A hard link shared the inode: truncating the copy truncated the user's model."""
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "w.bin").write_bytes(b"weights" * 1000)
    clone_tree(tmp_path / "src", tmp_path / "dst")
    copy = tmp_path / "dst" / "sub" / "w.bin"
    assert copy.read_bytes() == b"weights" * 1000
    assert os.stat(copy).st_ino != os.stat(tmp_path / "src" / "sub" / "w.bin").st_ino
    with open(copy, "r+b") as f:
        f.truncate(3)
    assert (tmp_path / "src" / "sub" / "w.bin").read_bytes() == b"weights" * 1000
    clone_file(tmp_path / "src" / "sub" / "w.bin", tmp_path / "one")
    assert os.stat(tmp_path / "one").st_mtime == os.stat(tmp_path / "src" / "sub" / "w.bin").st_mtime


def test_the_cache_folder_and_link_types_come_from_dvc_config(tmp_path):
    (tmp_path / ".dvc").mkdir()
    assert dvc_cache(tmp_path) == (tmp_path / ".dvc" / "cache", ["reflink", "copy"])
    (tmp_path / ".dvc" / "config").write_text("[cache]\n    dir = /big/cache\n", encoding="utf-8")
    (tmp_path / ".dvc" / "config.local").write_text("[cache]\n    type = \"hardlink,symlink\"\n", encoding="utf-8")
    assert dvc_cache(tmp_path) == (Path("/big/cache"), ["hardlink", "symlink"])


def test_only_what_the_cache_lacks_needs_room(tmp_path):
    cache = tmp_path / "cache"
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(b"a" * 100)
    new.write_bytes(b"b" * 300)
    digest = hashlib.md5(old.read_bytes()).hexdigest()
    (cache / "files" / "md5" / digest[:2]).mkdir(parents=True)
    (cache / "files" / "md5" / digest[:2] / digest[2:]).write_bytes(old.read_bytes())
    assert copy_needed([old, new], cache) == 300


def test_no_room_is_said_before_dvc_says_no_possible_cache_link_types(tmp_path):
    assert room_problem(10 * 2**20, 100 * 2**20, "models/adapter", tmp_path) is None
    said = room_problem(300 * 2**20, 200 * 2**20, "models/adapter", tmp_path / ".dvc/cache")
    assert said == (f"no room for DVC to save models/adapter into its cache {tmp_path}/.dvc/cache: it copies 300.0 "
                    "MiB and 200.0 MiB are free there; free some space (`dvc gc --workspace` drops cached versions no "
                    "commit uses) and rerun")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "out.json").write_text("{}", encoding="utf-8")
    assert room_to_save(tmp_path / "out.json", tmp_path, tmp_path / "out.json") is None   # a small file fits


def test_a_full_disk_is_named_from_the_tool_output_whatever_is_left(tmp_path):
    """The hint appeared only under 64 MiB free: a failed 300 MB checkpoint write leaves more than that."""
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert free > LOW_SPACE
    said = full_disk_hint(b"...\nOSError: [Errno 28] No space left on device\n", (tmp_path, tmp_path / "missing"))
    assert said.startswith(f"no space left on device in {tmp_path} (") and said.endswith(" MiB free)")
    assert full_disk_hint(b"RuntimeError: shape mismatch\n", (tmp_path,)) is None
    assert full_disk_hint(b"No space left on device", ()) == "no space left on device"
