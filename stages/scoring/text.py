"""Text metrics of free-text answers and text fields, per item, so that they get bootstrap intervals and paired
tests like every other measure: BLEU and chrF (sacrebleu), ROUGE-L (rouge-score) and the character error rate
(jiwer). Chinese has no spaces between words, so BLEU uses sacrebleu's `zh` tokenizer (every CJK character a token,
13a for the rest, which leaves English as 13a has it) and ROUGE-L's tokens are CJK characters and lower-cased words;
chrF and CER work on characters anyway. BLEU, chrF and ROUGE-L are 0..1 (sacrebleu's 0..100 divided by 100), higher
is better; CER is edits per reference character, lower is better, and can pass 1. A missing prediction scores 0
(CER 1: every character deleted)."""
from __future__ import annotations

import re

import jiwer
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

MEASURES = ("bleu", "chrf", "rouge_l", "cer")
LOWER_IS_BETTER = {"cer"}
CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")


class _Tokenizer:
    """rouge-score's tokenizer interface: CJK characters one by one, other runs of non-space as lower-cased words
    (its default tokenizer drops every non-ASCII character, so Chinese would score nothing)."""

    def tokenize(self, text: str) -> list[str]:
        return [t.lower() for t in TOKEN.findall(text)]


_BLEU = BLEU(tokenize="zh", effective_order=True)   # effective order: a short sentence is not 0 for lack of 4-grams
_CHRF = CHRF()
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def item_scores(ref: str, pred: str | None) -> dict[str, float]:
    """The four measures of one prediction against its reference."""
    if not pred:
        return {"bleu": 0.0, "chrf": 0.0, "rouge_l": 0.0, "cer": 1.0}
    return {"bleu": _BLEU.sentence_score(pred, [ref]).score / 100,
            "chrf": _CHRF.sentence_score(pred, [ref]).score / 100,
            "rouge_l": _ROUGE.score(ref, pred)["rougeL"].fmeasure,
            "cer": float(jiwer.cer(ref, pred)) if ref else float(bool(pred))}


def per_item(refs: list[str], preds: list[str | None]) -> dict[str, list[float]]:
    """measure -> its score per item."""
    scores = [item_scores(r, p) for r, p in zip(refs, preds)]
    return {m: [s[m] for s in scores] for m in MEASURES}
