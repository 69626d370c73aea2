"""Stage `compare`: paired figures of base against fine-tuned on the same items."""
import json

import pytest
from scipy.stats import binomtest

from stages.compare import compare, file_stem, headline, markdown
from stages.scoring.paired import paired_binary, paired_errors

SPECS = {"direction": {"type": "categorical", "tolerance": 0}, "distance": {"type": "numeric", "tolerance": 1},
         "analysis": {"type": "text", "tolerance": 0}}


def test_mcnemar_counts_only_the_items_the_models_disagree_on():
    base = [True] * 50 + [False] * 50
    tuned = [True] * 45 + [False] * 5 + [True] * 30 + [False] * 20      # 5 lost, 30 gained
    r, info = paired_binary(base, tuned)
    assert (info["only_base"], info["only_finetuned"], info["n"]) == (5, 30, 100)
    assert r["base"] == 0.5 and r["finetuned"] == 0.75 and r["diff"] == 0.25
    assert r["p_value"] == pytest.approx(binomtest(5, 35, 0.5).pvalue, rel=1e-2)   # exact McNemar: a binomial test
    assert r["ci95_lower"] < 0.25 < r["ci95_upper"] and r["ci95_lower"] > 0


def test_no_disagreement_is_no_evidence():
    r, _ = paired_binary([True, False, True], [True, False, True])
    assert r["diff"] == 0 and r["p_value"] == 1.0 and (r["ci95_lower"], r["ci95_upper"]) == (0.0, 0.0)


def test_a_small_gain_on_few_items_is_not_significant():
    r, _ = paired_binary([False] * 10, [True] + [False] * 9)
    assert r["diff"] == 0.1 and r["p_value"] == 1.0 and r["ci95_lower"] <= 0


def test_numeric_errors_are_paired_on_the_items_both_answered():
    r, info = paired_errors([3.0, 2.0, None, 4.0, 1.0, 5.0], [1.0, 0.0, 0.0, 1.0, None, 2.0])
    assert info == {"test": "Wilcoxon signed-rank", "n": 4}
    assert r["base"] == 3.5 and r["finetuned"] == 1.0 and r["diff"] == -2.5
    assert r["ci95_upper"] < 0
    alone, info = paired_errors([None, None], [1.0, 2.0])   # a base model that answers no number
    assert info["n"] == 0 and alone["finetuned"] == 1.5
    assert {k for k, v in alone.items() if v is None} == {"base", "diff", "ci95_lower", "ci95_upper", "p_value"}
    nothing, _ = paired_errors([None], [None])
    assert set(nothing.values()) == {None}


def test_compare_rows_for_every_measure():
    refs = [{"direction": "+", "distance": 3, "analysis": "向+方向移动3步"},
            {"direction": "-", "distance": 5, "analysis": "向-方向移动5步"}]
    base = [(None, "failed"), ({"direction": "+", "distance": 9, "analysis": "x"}, "repaired")]
    tuned = [({"direction": "+", "distance": 4, "analysis": "向+方向移动3步。"}, "ok"),
             ({"direction": "-", "distance": 5, "analysis": "向-方向移动5步"}, "ok")]
    out = compare(refs, base, tuned, SPECS)
    assert list(out) == ["parse_rate", "exact_match", "direction_accuracy", "distance_within_tol",
                         "analysis_normalised", "repaired_rate", "distance_mae", "analysis_chrf"]
    assert out["parse_rate"][0]["base"] == 0.0 and out["parse_rate"][0]["finetuned"] == 1.0   # repaired: not valid
    assert out["repaired_rate"][0]["base"] == 0.5 and out["repaired_rate"][0]["finetuned"] == 0.0
    assert out["exact_match"][0]["finetuned"] == 0.5                 # distance 4 is not 3
    assert out["distance_within_tol"][0]["finetuned"] == 1.0         # but within 1
    assert out["analysis_normalised"][0]["finetuned"] == 1.0         # the full stop is folded
    assert out["distance_mae"][1]["n"] == 1 and out["distance_mae"][0]["diff"] == -4.0
    chrf = out["analysis_chrf"][0]                                    # base: missing and "x" score 0
    assert chrf["base"] == 0.0 and 0.9 < chrf["finetuned"] <= 1.0
    for r, _ in out.values():
        assert list(r) == ["base", "finetuned", "diff", "ci95_lower", "ci95_upper", "p_value"]
        json.dumps(r)                                                 # plain numbers (or null) for DVC
    md = markdown(out)
    assert "| direction_accuracy | 0.0% | 100.0% | +100.0% |" in md and "| distance_mae | 4.000 | 0.000 | -4.000 |" in md


def test_field_names_become_safe_file_names():
    assert file_stem("方向_accuracy") == "方向_accuracy"
    assert file_stem("../../etc/x_accuracy") == "_.._etc_x_accuracy"
    assert "/" not in file_stem("a/b") and not file_stem(".hidden").startswith(".")


def test_the_headline_has_one_short_key_per_measure_and_model():
    refs = [{"direction": "+", "distance": 3, "parse": "a"}]
    specs = {"direction": {"type": "categorical", "tolerance": 0}, "distance": {"type": "numeric", "tolerance": 1},
             "parse": {"type": "categorical", "tolerance": 0}}   # a field named like a measure keeps its long name
    out = compare(refs, [(None, "failed")], [({"direction": "+", "distance": 4, "parse": "a"}, "ok")], specs)
    h = headline(out, specs)
    assert h == {"parse": 1.0, "exact": 0.0, "direction": 1.0, "distance": 1.0, "parse_accuracy": 1.0,
                 "base": {"parse": 0.0, "exact": 0.0, "direction": 0.0, "distance": 0.0, "parse_accuracy": 0.0}}


def test_a_card_draws_the_images_and_marks_each_field(tmp_path):
    from PIL import Image

    from stages.scoring.cards import RIGHT, THUMB, WRONG, card, picked

    for name, shade in (("a.png", 40), ("b.png", 200)):
        Image.new("L", (64, 64), shade).save(tmp_path / name)
    ref = {"direction": "+", "distance": 3, "analysis": "x"}
    answers = {"base": (None, "failed"), "fine-tuned": ({"direction": "+", "distance": 5, "analysis": "x"}, "ok")}
    im = card([tmp_path / "a.png", tmp_path / "b.png"], "test item 7", ref, answers, SPECS)
    assert im.height >= THUMB + 16 and im.getpixel((8 + THUMB // 2, 8 + THUMB // 2)) == (40, 40, 40)   # 64 px -> 192
    assert im.getpixel((8 + THUMB + 8 + THUMB // 2, 20)) == (200, 200, 200)
    colours = {c for _, c in im.getcolors(1 << 20)}
    assert RIGHT in colours and WRONG in colours                  # direction right, distance and base wrong
    assert picked([9, 4], 30, 3) == {"worst_01.png": 9, "worst_02.png": 4, "sample_01.png": 0, "sample_02.png": 1,
                                     "sample_03.png": 2}
