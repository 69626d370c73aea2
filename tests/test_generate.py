"""The generate stage: format, determinism, and labels that agree with the optics."""
import csv
import hashlib
import re

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

import stages.generate as gen
from stages.params.paths import foreign_files, synth_folder_problem

CFG = {"num_samples": 40, "image_size": 64, "max_distance": 10, "focus_sigma": 0.5,
       "blur_per_step": 0.6, "noise_std": 0.02, "full_well": 1000, "brightness_jitter": 0.1}
QUIET = {**CFG, "noise_std": 0.0, "full_well": 0, "brightness_jitter": 0.0}


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_labels(folder):
    with open(folder / "labels.csv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def contrast(img):
    """Normalized variance of the lightly smoothed image: an autofocus metric blind to exposure."""
    x = gaussian_filter(np.asarray(img, dtype=float), 1.0)
    return x.var() / x.mean() ** 2


def test_label_and_analysis_text():
    assert gen.label(3) == ("+", 3) and gen.label(-7) == ("-", 7)
    assert gen.analysis_text("-", 7) == "电机应该向-方向移动7步。"
    with pytest.raises(ValueError, match="non-zero"):
        gen.label(0)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        gen.generate(out, CFG, seed)
    assert digests(a) == digests(b)
    assert len(digests(a)) == 2 * CFG["num_samples"] + 1
    assert set(digests(a).values()).isdisjoint(digests(c).values())


def test_each_sample_has_its_own_seed(tmp_path):
    gen.generate(tmp_path / "few", {**CFG, "num_samples": 5}, 3)
    gen.generate(tmp_path / "many", {**CFG, "num_samples": 12}, 3)
    few, many = digests(tmp_path / "few"), digests(tmp_path / "many")
    assert all(many[path] == digest for path, digest in few.items() if path.startswith("images/"))
    assert read_labels(tmp_path / "few")[1:] == read_labels(tmp_path / "many")[1:6]


def test_labels_file_format(tmp_path):
    out = tmp_path / "raw"
    gen.generate(out, CFG, 0)
    header, *rows = read_labels(out)
    assert header == ["id", "image_1", "image_2", "analysis", "direction", "distance"]
    assert [r[0] for r in rows] == [f"{i:06d}" for i in range(CFG["num_samples"])]
    for sid, image_1, image_2, analysis, direction, distance in rows:
        assert (image_1, image_2) == (f"images/{sid}_1.png", f"images/{sid}_2.png")
        assert re.fullmatch(r"电机应该向[+-]方向移动\d+步。", analysis)
        assert analysis == gen.analysis_text(direction, int(distance))
        assert direction in "+-" and 1 <= int(distance) <= CFG["max_distance"]
        for path in (image_1, image_2):
            with Image.open(out / path) as img:
                assert (img.mode, img.size) == ("L", (64, 64))
    assert {r[4] for r in rows} == {"+", "-"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temp dir left behind


@pytest.mark.parametrize("size", [64, 128])
def test_sharper_image_agrees_with_direction(tmp_path, size):
    out = tmp_path / "raw"
    rows = gen.generate(out, {**CFG, "num_samples": 200, "image_size": size}, 1)
    agree = [(contrast(Image.open(out / r["image_2"])) > contrast(Image.open(out / r["image_1"])))
             == (r["direction"] == "+") for r in rows]
    assert np.mean(agree) >= 0.9
    counts = np.bincount([r["distance"] for r in rows], minlength=CFG["max_distance"] + 1)
    assert counts[0] == 0 and counts[1:].min() >= 5  # every distance drawn


def test_blur_grows_with_defocus_and_is_symmetric():
    specimen = gen.make_specimen(np.random.default_rng(0), 64)
    shots = [gen.capture(specimen, dz, QUIET, np.random.default_rng(1)) for dz in range(12)]
    assert all(contrast(a) > contrast(b) for a, b in zip(shots, shots[1:]))
    assert np.array_equal(gen.capture(specimen, -4, QUIET, np.random.default_rng(1)), shots[4])
    assert shots[-1].std() > 2  # far out of focus, but not a uniform grey


def test_a_failed_run_keeps_the_previous_data(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    gen.generate(out, {**CFG, "num_samples": 4}, 0)
    before = digests(out)
    monkeypatch.setattr(gen, "COLUMNS", [*gen.COLUMNS, "missing"])  # fails after the images are written
    with pytest.raises(KeyError):
        gen.generate(out, CFG, 1)
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize("key, value, message", [
    ("num_samples", 0, "synth.num_samples: Input should be greater than 0, got 0"),
    ("max_distance", 0, "synth.max_distance: Input should be greater than 0, got 0"),
    ("image_size", 16, "synth.image_size: Input should be greater than or equal to 32, got 16"),
    ("image_size", 64.0, "synth.image_size: Input should be a valid integer, got 64.0"),
    ("blur_per_step", 0, "synth.blur_per_step: Input should be greater than 0, got 0"),
    ("noise_std", -0.1, "synth.noise_std: Input should be greater than or equal to 0, got -0.1"),
    ("brightness_jitter", 1.5, "synth.brightness_jitter: Input should be less than 1, got 1.5"),
    ("full_well", None, "synth.full_well: Input should be a valid integer, got None"),
])
def test_bad_synth_params_name_the_key_and_the_valid_range(params, key, value, message):
    from stages.params import ParamsError, validate
    params["synth"][key] = value
    with pytest.raises(ParamsError, match=re.escape(message)):
        validate(params)


def test_foreign_files_are_what_generate_did_not_write(tmp_path):
    assert foreign_files(tmp_path / "data/new") == [] and synth_folder_problem(tmp_path, "data/new") is None
    out = tmp_path / "data/out"
    gen.generate(out, {**CFG, "num_samples": 2}, 0)
    assert foreign_files(out) == []                                  # a previous run's output may be replaced
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert foreign_files(out) == ["notes.txt"]
    assert "data/out holds files the generate stage did not write (notes.txt)" in synth_folder_problem(tmp_path, "data/out")
    assert synth_folder_problem(tmp_path) is None                  # data/raw: not there yet


def test_a_users_images_and_labels_under_the_generators_names_are_foreign(tmp_path):
    """A user's data in the README's layout (images/ + labels.csv) once passed as the stage's own, by name alone."""
    out = tmp_path / "data/mine"
    gen.generate(out, {**CFG, "num_samples": 2}, 0)
    (out / "images/cell_a.jpg").write_bytes(b"mine")
    (out / "labels.csv").write_text("image,label\nimages/cell_a.jpg,3\n", encoding="utf-8")
    assert foreign_files(out) == ["images/cell_a.jpg", "labels.csv"]
    (out / "labels.csv").unlink()
    (out / "images/000000_1.png").unlink()
    (out / "images/000000_1.png").symlink_to(out / "images/cell_a.jpg")   # a link out is never the stage's
    assert foreign_files(out) == ["images/000000_1.png", "images/cell_a.jpg"]

