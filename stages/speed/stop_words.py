"""An ms-swift plugin (`--external_plugins`): the template's stop-word check, run at every decoding step, keeps
its record of finished rows on the host.

ms-swift's `StopWordsCriteria.__call__` decodes each row's last tokens and then, row by row, reads and writes one
element of a bool tensor on the model's device (`is_done[i]`): on a GPU at batch 512 that is 512 waits for the
device and 512 one-element kernels a step, while the GPU idles (one batch's generate of 31 steps made 16,455
`aten::item` calls, 512 rows x 31 steps of them here: torch profiler, H100, bench/runs/14-h100-profile_infer.txt).
Here the last tokens are copied to the host once a step, the same test runs there on the same decoded text, and
one tensor goes back: the same rows stop at the same step. With the KV room (kv_cache.py), the decoding left in a
batch's generate went from 1.59 s to 0.36 s (H100, runs 14 and 15). On a CPU it saves the per-element indexing.
"""
from __future__ import annotations

import torch
from swift.template.utils import StopWordsCriteria

OWN = getattr(StopWordsCriteria.__call__, "_own", StopWordsCriteria.__call__)   # ms-swift's, once loaded twice
TAIL = 20   # ms-swift decodes at most a row's last 20 tokens, "assuming the end tokens do not exceed 20 tokens"


def stopped(text: str, tokens: list[int], stop_words: list) -> bool:
    """ms-swift's test: a str stop word anywhere in the decoded text, or the tokens ending with a list stop word
    (`tokens` holds at least the longest list's length, or the whole row)."""
    return any(isinstance(w, str) and w in text or isinstance(w, list) and tokens[-len(w):] == w for w in stop_words)


def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
    if self.start_idx == -1:
        self.start_idx = len(input_ids[0]) - 1
        self.done = [False] * input_ids.shape[0]
    elif not hasattr(self, "done"):   # begun by ms-swift's own check
        self.done = self.is_done.tolist()
    length = input_ids.shape[1]
    start = max(self.start_idx, length - TAIL)
    longest = max((len(w) for w in self.stop_words if isinstance(w, list)), default=0)
    first = max(0, min(start, length - longest))
    tails = input_ids[:, first:].tolist()   # the one copy from the device this step
    rows = [i for i, done in enumerate(self.done) if not done]
    texts = self.tokenizer.batch_decode([tails[i][start - first:] for i in rows], **self.tokenizer_kwargs)
    for i, text in zip(rows, texts):
        self.done[i] = stopped(text, tails[i], self.stop_words)
    self.is_done = torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
    return self.is_done


__call__._own = OWN
StopWordsCriteria.__call__ = __call__
