import pytest

from stages.score import parse_answer, score

REF = {"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}


@pytest.mark.parametrize("text, expected, status", [
    ('{"analysis": "电机应该向-方向移动7步。", "direction": "-", "distance": 7}', REF, "ok"),
    ('```json\n{"direction": "+", "distance": 3}\n```', {"direction": "+", "distance": 3}, "ok"),
    ('The answer is {"direction": "+", "distance": 3} as requested.', {"direction": "+", "distance": 3}, "repaired"),
    ("{'direction': '-', 'distance': 2,}", {"direction": "-", "distance": 2}, "repaired"),
    ('{"direction": "-", "distance": 2}{"direction": "+", "distance": 9}', {"direction": "-", "distance": 2}, "repaired"),
    ('{"direction": "-", "dist', {"direction": "-"}, "repaired"),
    ("no json here", None, "failed"),
    ("", None, "failed"),
    ("[1, 2, 3]", None, "failed"),
])
def test_parse_answer(text, expected, status):
    assert parse_answer(text) == (expected, status)


def test_score_counts_failures_as_wrong_and_keeps_types():
    pairs = [
        (REF, dict(REF)),                                                # all right
        (REF, {"analysis": "x", "direction": "-", "distance": 8}),      # off by one
        (REF, {"analysis": "x", "direction": "+", "distance": "7"}),    # distance as a string: not a number
        (REF, None),                                                     # unparseable
    ]
    m = score(pairs, tolerance=1)
    assert m["n"] == 4
    assert m["parse_rate"] == 0.75
    assert m["exact_match"] == 0.25
    assert m["fields"]["direction"] == {"accuracy": 0.5}
    assert m["fields"]["distance"] == {"exact": 0.25, "within_tol": 0.5, "mae": 0.5}
    assert m["fields"]["analysis"] == {"accuracy": 0.25}


def test_score_empty_and_missing_field():
    assert score([], 1) == {"n": 0, "parse_rate": 0.0, "exact_match": 0.0, "fields": {}}
    m = score([(REF, {"direction": "-"})], 1)
    assert m["fields"]["distance"] == {"exact": 0.0, "within_tol": 0.0, "mae": None}
    assert m["exact_match"] == 0.0
