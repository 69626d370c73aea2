"""Scoring of model answers (stages/scoring/): a table of real-looking outputs with their expected parse
and per-field verdicts, then each metric on small hand-counted cases."""
import re

import pytest
from scipy.stats import binomtest

from stages.scoring.answers import MISSING, normalise_text, parse_answer
from stages.scoring.fields import answer_kind, derive_fields, resolve_fields
from stages.scoring.measures import confusion_matrix, score, wilson, worst, wrong_fields

REF = {"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}
SPECS = {"analysis": {"type": "text", "tolerance": 0}, "direction": {"type": "categorical", "tolerance": 0},
         "distance": {"type": "numeric", "tolerance": 1}}
ALL = ["analysis", "direction", "distance"]

# (model output, parsed answer, parse status, fields wrong against REF)
OUTPUTS = [
    # clean
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}', REF, "ok", []),
    ('```json\n{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}\n```', REF, "ok", []),
    ('```JSON\n{"direction": "-", "distance": 7}\n```', {"direction": "-", "distance": 7}, "ok", ["analysis"]),
    # prose around the object, or several objects
    ('根据两张图像的清晰度变化，结果如下：\n```json\n{"direction": "-", "distance": 7}\n```\n希望对你有帮助。',
     {"direction": "-", "distance": 7}, "repaired", ["analysis"]),
    ('The answer is {"direction": "+", "distance": 3} as requested.', {"direction": "+", "distance": 3}, "repaired",
     ALL),
    ('{"direction": "-", "distance": 6} {"direction": "+", "distance": 9}', {"direction": "-", "distance": 6},
     "repaired", ["analysis", "distance"]),
    ('[{"direction": "-", "distance": 7}]', {"direction": "-", "distance": 7}, "repaired", ["analysis"]),
    # broken syntax: single quotes, trailing comma, truncated by max_new_tokens
    ("{'direction': '-', 'distance': 8,}", {"direction": "-", "distance": 8}, "repaired", ["analysis", "distance"]),
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "dist',
     {"analysis": "电机应该向-方向移动7步。", "direction": "-"}, "repaired", ["distance"]),
    ('```json\n{"direction": "-", "distance": 7', {"direction": "-", "distance": 7}, "repaired", ["analysis"]),
    # junk tokens of an undertrained model (the embedded default's fine-tune writes these)
    ('{"analysis": "电机应该向+方向移动<|unused_122667|>步。", "direction": "+", "distance": <|unused_85342|>}',
     {"analysis": "电机应该向+方向移动步。", "direction": "+", "distance": ""}, "repaired", ALL),
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}<|im_end|>', REF, "repaired", []),
    ("<|unused_1|><|unused_2|>", None, "failed", ALL),
    # wrong types, extra fields, nulls
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": "7"}', {**REF, "distance": "7"}, "ok",
     ["distance"]),
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7.0}', {**REF, "distance": 7.0}, "ok", []),
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7, "confidence": 0.9}',
     {**REF, "confidence": 0.9}, "ok", []),
    ('{"direction": null, "distance": 7}', {"direction": None, "distance": 7}, "ok", ["analysis", "direction"]),
    ('{"direction": true, "distance": -7}', {"direction": True, "distance": -7}, "ok", ALL),
    # Chinese text: full-width digits and signs are not the reference's characters
    ('{"analysis": "电机应该向-方向移动７步", "direction": "－", "distance": 7}',
     {"analysis": "电机应该向-方向移动７步", "direction": "－", "distance": 7}, "ok", ["analysis", "direction"]),
    # no JSON at all
    ("电机应该向-方向移动7步。", None, "failed", ALL),
    ("\n\n\n\n", None, "failed", ALL),
    ("", None, "failed", ALL),
    ("[1, 2, 3]", None, "failed", ALL),
]


@pytest.mark.parametrize("text, expected, status, wrong", OUTPUTS, ids=[repr(o[0])[:40] for o in OUTPUTS])
def test_parse_and_judge_real_looking_outputs(text, expected, status, wrong):
    parsed, got_status = parse_answer(text)
    assert (parsed, got_status) == (expected, status)
    assert wrong_fields(REF, parsed, SPECS) == wrong


@pytest.mark.parametrize("text", ['{"direction": "-", "distance": NaN}', '{"direction": "-", "distance": -Infinity}',
                                  '{"direction": "-", "distance": 1' + "0" * 400 + "}"])
def test_nan_infinity_and_huge_numbers_are_wrong_not_a_crash(text):
    parsed, status = parse_answer(text)
    assert status == "ok" and not isinstance(parsed["distance"], str)
    m = score([(REF, parsed)], SPECS, [status])["fields"]["distance"]
    assert (m["exact"], m["within_tol"], m["mae"], m["mae_n"], m["missing"]) == (0.0, 0.0, None, 0, 0)


def test_score_of_the_output_table():
    parsed = [parse_answer(text) for text, *_ in OUTPUTS]
    m = score([(REF, p) for p, _ in parsed], SPECS, [status for _, status in parsed])
    n = len(OUTPUTS)
    assert m["n"] == n == 23
    # strictly valid: 6 of the 18 that give an object (as they stand, every field: the clean two, "7", 7.0, the
    # extra field and the full-width one); valid only after repair: the one with <|im_end|> after it
    assert m["parse_rate"] == round(6 / n, 4) and m["repaired_rate"] == round(1 / n, 4)
    assert m["exact_match"] == round(sum(not w for *_, w in OUTPUTS) / n, 4) == round(5 / n, 4)
    d = m["fields"]["direction"]
    assert d["accuracy"] == round(13 / n, 4)
    assert d["missing"] == 6                          # 5 unparsed + 1 null
    assert d["per_class"]["-"] == {"precision": 1.0, "precision_ci95": {"lower": 0.7719, "upper": 1.0},
                                   "recall": round(13 / n, 4), "recall_ci95": d["accuracy_ci95"], "support": n}
    assert set(d["per_class"]) == {"-"}              # only the reference's classes: same keys for every model
    dist = m["fields"]["distance"]
    assert dist["missing"] == 7                      # 5 unparsed + the truncated one + the junk-token ""
    assert dist["mae_n"] == 15                       # "7" is a string, not a number
    assert dist["exact"] == round(11 / n, 4) and dist["within_tol"] == round(13 / n, 4)
    assert dist["mae"] == round((4 + 1 + 1 + 14) / 15, 4)
    t = m["fields"]["analysis"]
    assert (t["exact"], t["normalised"], t["missing"]) == (round(7 / n, 4), round(8 / n, 4), 14)


def test_rates_carry_wilson_intervals_with_fixed_keys():
    m = score([(REF, dict(REF)), (REF, None)], SPECS, ["ok", "failed"])
    assert m["parse_rate"] == 0.5 and m["parse_rate_ci95"] == {"lower": 0.0945, "upper": 0.9055}
    assert set(m["fields"]["distance"]) == {"exact", "exact_ci95", "within_tol", "within_tol_ci95", "mae", "mae_n",
                                            "missing"}
    assert set(m["fields"]["analysis"]) == {"exact", "exact_ci95", "normalised", "normalised_ci95", "missing",
                                            *(k for t in ("bleu", "chrf", "rouge_l", "cer") for k in (t, f"{t}_ci95"))}
    assert set(m["fields"]["direction"]["per_class"]["-"]) == {"precision", "precision_ci95", "recall",
                                                               "recall_ci95", "support"}


def test_score_empty_and_missing_field():
    empty = score([], SPECS, [])
    assert empty["n"] == 0 and empty["parse_rate"] is None and empty["parse_rate_ci95"] == {"lower": 0.0, "upper": 1.0}
    m = score([(REF, {"direction": "-"})], SPECS, ["ok"])
    assert m["fields"]["distance"]["exact"] == 0.0 and m["fields"]["distance"]["missing"] == 1
    assert m["fields"]["distance"]["mae"] is None
    assert m["exact_match"] == 0.0


def test_categorical_precision_recall_and_never_predicted_class():
    refs = [{"d": "+"}, {"d": "+"}, {"d": "-"}, {"d": "-"}]
    preds = [{"d": "+"}, {"d": "+"}, {"d": "+"}, None]
    m = score(list(zip(refs, preds)), {"d": {"type": "categorical", "tolerance": 0}}, ["ok"] * len(refs))["fields"]["d"]
    assert m["accuracy"] == 0.5 and m["missing"] == 1
    assert m["per_class"]["+"]["precision"] == round(2 / 3, 4) and m["per_class"]["+"]["recall"] == 1.0
    assert m["per_class"]["-"]["precision"] is None      # never predicted: undefined, not 0
    assert m["per_class"]["-"]["precision_ci95"] == {"lower": 0.0, "upper": 1.0}
    assert m["per_class"]["-"]["recall"] == 0.0


@pytest.mark.parametrize("k, n", [(0, 10), (5, 10), (10, 10), (84, 100), (1, 90), (44, 90), (90, 90)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_known_values_and_no_data():
    assert wilson(84, 100) == pytest.approx((0.7558, 0.8990), abs=1e-4)   # hand-computed
    assert wilson(0, 90)[1] == pytest.approx(0.0409, abs=1e-4)     # 0 of 90 right still allows up to 4 %
    assert wilson(0, 0) == (0.0, 1.0)


def test_confusion_matrix_counts_every_cell_and_puts_missing_last():
    m = confusion_matrix(["+", "+", "-", "-", "-"], ["+", MISSING, "+", "-", "x"])
    assert list(m) == ["+", "-", "x", MISSING]
    assert m["+"] == {"+": 1, "-": 0, "x": 0, MISSING: 1}
    assert m["-"] == {"+": 1, "-": 1, "x": 1, MISSING: 0}
    assert sum(sum(row.values()) for row in m.values()) == 5


@pytest.mark.parametrize("a, b, same", [
    ("电机应该向-方向移动7步。", "电机应该向-方向移动７步", True),        # full-width digit, no full stop
    ("电机应该向-方向移动7步。", " 电机应该向－方向 移动7步. ", True),    # full-width dash, spaces, ASCII stop
    ("Move  7 steps, direction '-'!", "move 7 steps direction -", True),
    ("电机应该向-方向移动7步。", "电机应该向+方向移动7步。", False),      # the sign is content, not punctuation
    ("电机应该向-方向移动7步。", "电机应该向方向移动7步。", False),
    ("7步", "17步", False),
])
def test_normalise_text(a, b, same):
    assert (normalise_text(a) == normalise_text(b)) is same


def test_text_field_exact_vs_normalised():
    refs = [{"t": "电机应该向-方向移动7步。"}] * 3
    preds = [{"t": "电机应该向-方向移动7步。"}, {"t": "电机应该向-方向移动７步"}, {"t": 7}]
    m = score(list(zip(refs, preds)), {"t": {"type": "text", "tolerance": 0}}, ["ok"] * len(refs))["fields"]["t"]
    assert (m["exact"], m["normalised"], m["missing"]) == (round(1 / 3, 4), round(2 / 3, 4), 0)


def test_derive_fields_from_reference_answers():
    refs = [{"analysis": f"移动{i}步", "direction": "+-"[i % 2], "distance": i, "ok": i > 2} for i in range(1, 21)]
    assert derive_fields(refs, max_classes=10) == {"analysis": "text", "direction": "categorical",
                                                   "distance": "numeric", "ok": "categorical"}
    assert derive_fields(refs, max_classes=20)["analysis"] == "categorical"
    assert derive_fields([{"x": 1.5}, {"x": True}], 10) == {"x": "categorical"}   # a bool is no number


def test_resolve_fields_defaults_and_overrides():
    refs = [{"direction": "+", "distance": 3}, {"direction": "-", "distance": 4}]
    assert resolve_fields(refs, {}, {"distance": 1}, 10) == ({
        "direction": {"type": "categorical", "tolerance": 0}, "distance": {"type": "numeric", "tolerance": 1}}, [], [])
    assert resolve_fields(refs, {"distance": "categorical"}, {}, 10) == ({
        "distance": {"type": "categorical", "tolerance": 0}}, [], [])


def test_the_default_tolerance_fits_data_without_its_field():
    specs, problems, warnings = resolve_fields([{"label": "cat"}, {"label": "dog"}], {}, {"distance": 1}, 10)
    assert specs == {"label": {"type": "categorical", "tolerance": 0}} and problems == []
    assert warnings == ["score.tolerance.distance: no answer has a field 'distance', so it is not used "
                        "(answer fields: label)"]


@pytest.mark.parametrize("refs, fields, tolerance, match", [
    ([], {}, {}, "no reference answers"),
    ([{"d": 1}, {"e": 2}], {"d": "numeric"}, {},
     r"answer field d: 1 of 2 answers have no value \(at row 2\); expected a value in every answer"),
    ([{"d": "seven"}], {"d": "numeric"}, {}, r"score\.fields\.d: numeric, but .*'seven' at row 1"),
    ([{"d": "+", "n": 1}], {}, {"d": 1}, r"score\.tolerance\.d: not a numeric field; numeric fields: n"),
    ([{"d": "+", "e": "x"}], {}, {"e": 1}, r"score\.tolerance\.e: not a numeric field; numeric fields: none"),
])
def test_resolve_fields_rejects_what_does_not_fit(refs, fields, tolerance, match):
    _, problems, _ = resolve_fields(refs, fields, tolerance, 10)
    assert len(problems) == 1 and re.search(match, problems[0]), problems


def test_resolve_fields_reports_every_problem_at_once():
    _, problems, _ = resolve_fields([{"a": "x"}], {"a": "numeric", "b": "text"}, {}, 10, ["data/raw/qa.jsonl:1"])
    assert len(problems) == 2 and "score.fields.a" in problems[0] and "at data/raw/qa.jsonl:1" in problems[1]


@pytest.mark.parametrize("answers, requested, kind, n_problems, n_warnings", [
    (['{"a": 1}', '{"a": 2}'], "auto", "json", 0, 0),
    (["a dog", "一只猫"], "auto", "text", 0, 0),
    (['{"a": 1}', "a dog"], "auto", "text", 0, 1),             # a mix: text, with a warning
    (['{"a": 1}', "{'a': 2}"], "auto", "json", 1, 0),          # a Python dict among objects: reported
    (['{"a": 1}', "a dog"], "json", "json", 1, 0),
    (['{"a": 1}', '{"a": 2}'], "text", "text", 0, 0),
])
def test_answer_kind(answers, requested, kind, n_problems, n_warnings):
    got, problems, warnings = answer_kind([(f"qa.jsonl:{i}", a) for i, a in enumerate(answers, 1)], requested)
    assert (got, len(problems), len(warnings)) == (kind, n_problems, n_warnings)


def test_a_python_dict_answer_is_named_with_its_line():
    _, problems, _ = answer_kind([("qa.jsonl:1", '{"a": 1}'), ("qa.jsonl:2", "{'a': 2}")], "auto")
    assert problems[0].startswith("qa.jsonl:2: the answer is not a JSON object (it looks like one but is not valid JSON")
    assert "double-quoted" in problems[0]


def test_worst_orders_failed_then_wrong_fields_then_error_and_skips_right_ones():
    rows = [(REF, dict(REF), "ok"),                                   # right: never listed
            (REF, {**REF, "distance": 9}, "ok"),                      # 1 wrong, error 2
            (REF, {**REF, "distance": 8}, "ok"),                      # 1 wrong, error 1
            (REF, None, "failed"),
            (REF, {"direction": "+", "distance": 7}, "repaired")]     # 2 wrong
    assert worst(rows, SPECS, k=10) == [3, 4, 1, 2]
    assert worst(rows, SPECS, k=2) == [3, 4]
    assert worst(rows[:1], SPECS, k=5) == []


def test_text_metrics_in_english_match_sacrebleu_and_work_by_character_in_chinese():
    import sacrebleu

    from stages.scoring.text import item_scores
    en = item_scores("A dog is running on grass.", "A dog runs on the grass.")
    assert en["bleu"] == pytest.approx(sacrebleu.sentence_bleu("A dog runs on the grass.",
                                                               ["A dog is running on grass."]).score / 100)
    zh = item_scores("一只白狗在海滩上奔跑。", "一只黑狗在海滩上奔跑。")    # one character of eleven differs
    assert zh["cer"] == pytest.approx(1 / 11) and 0.8 < zh["rouge_l"] < 1 and 0.5 < zh["bleu"] < 1
    assert item_scores("一只白狗。", "一只白狗。") == {"bleu": pytest.approx(1), "chrf": 1, "rouge_l": 1, "cer": 0}
    assert item_scores("一只白狗。", None) == {"bleu": 0, "chrf": 0, "rouge_l": 0, "cer": 1}


def test_a_text_field_gets_text_metrics_with_intervals():
    refs = [{"t": s} for s in ("一只白狗在海滩上奔跑。", "白色桌子上的一个红色方块。", "A red square.")]
    preds = [{"t": "一只黑狗在海滩上奔跑。"}, None, {"t": "A red square."}]
    m = score(list(zip(refs, preds)), {"t": {"type": "text", "tolerance": 0}}, ["ok"] * len(refs))["fields"]["t"]
    assert m["cer"] == pytest.approx((1 / 11 + 1 + 0) / 3, abs=1e-4)
    assert m["chrf_ci95"]["lower"] <= m["chrf"] <= m["chrf_ci95"]["upper"]


@pytest.mark.parametrize("text", ['{"direction":}', '{"direction": "+", "distance":', '{"analysis": "", "direction'])
def test_broken_json_rebuilt_by_repair_is_not_counted_as_parsed(text):
    """A barely trained model's `{"direction":}` once counted as parsed (json-repair rebuilt an object), so the parse
    rate rose from 0 to 100 % while every field was missing."""
    parsed, status = parse_answer(text)
    m = score([(REF, parsed)], SPECS, [status])
    assert status != "ok" and m["parse_rate"] == 0.0 and m["repaired_rate"] == 0.0
