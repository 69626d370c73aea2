"""An ms-swift plugin (`--external_plugins`) for the builtin model: its loss over the output rows it uses.

The builtin model's output layer (tied to its embedding) has Qwen's 151,936 rows, because ms-swift's
templates fix the image token's id; its tokenizer produces about 650 of them, and the others are exactly
zero (stages/tiny_model/build.py). LoRA keeps them frozen, so each of the N zero rows scores 0 for every
hidden state: it adds N * e^0 to the softmax's denominator and nothing to any gradient. Hence

    log p(y) = z_y - log(sum_used e^z_i + N) = z_y - logsumexp(z_used, log N)

and the logits over the used rows plus one constant column log N give the full head's loss and gradients
exactly, at 1/230 of its width. On 2 CPU cores that width was nine tenths of a training step
(bench/FINDINGS.md). `stages/train.py` adds this plugin for the builtin model under LoRA only.
"""
from __future__ import annotations

import math

import torch
from swift.callbacks import TrainerCallback, callbacks_map
from swift.loss import BaseLoss, loss_map

NAME = "used_rows"


def used_rows(weight: torch.Tensor) -> torch.Tensor:
    """Indices of the rows of an output layer's weight that are not all zero."""
    return torch.nonzero(weight.detach().abs().amax(dim=1) > 0).flatten()


def column_of(rows: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """token id -> its column in the narrow logits: used rows in order, every zero row -> the last column."""
    index = torch.full((vocab_size,), len(rows), dtype=torch.long)
    index[rows] = torch.arange(len(rows))
    return index


class UsedRowsHead(torch.nn.Module):
    """Stands in for the output layer: logits of the used rows, then the zero rows' log N."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        rows = used_rows(weight)
        self.original_shape = tuple(weight.shape)
        self.register_buffer("weight", weight.detach()[rows].clone(), persistent=False)
        self.register_buffer("column", column_of(rows, weight.shape[0]).to(weight.device), persistent=False)
        self.register_buffer("rows", rows.to(weight.device), persistent=False)
        self.log_zero_rows = math.log(weight.shape[0] - len(rows))

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """The full head's argmax from the narrow logits: the best used row, or a zero row (id -1 here, which
        matches no label) where every used row scores below 0."""
        best = logits.detach()[..., :-1].max(dim=-1)
        return torch.where(best.values >= 0, self.rows[best.indices], -1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        used = hidden @ self.weight.to(hidden.dtype).T
        return torch.cat([used, used.new_full((*used.shape[:-1], 1), self.log_zero_rows)], dim=-1)


def swap_head(model) -> tuple[torch.nn.Module, UsedRowsHead]:
    """Put a UsedRowsHead in place of the model's output layer; returns (the original, its stand-in)."""
    original = model.get_output_embeddings()
    if type(original) is not torch.nn.Linear or original.bias is not None or original.weight.requires_grad:
        raise RuntimeError(f"{NAME}: the output layer must be a frozen nn.Linear without bias, not {original!r} "
                           f"(requires_grad={getattr(original.weight, 'requires_grad', None)}); "
                           "stages/train.py adds this plugin only under LoRA with lm_head untouched")
    if len(used_rows(original.weight)) == original.weight.shape[0]:
        raise RuntimeError(f"{NAME}: the output layer has no zero rows: nothing to leave out")
    head = UsedRowsHead(original.weight)
    model.set_output_embeddings(head)
    return original, head


class UsedRowsCallback(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.original, self.head = swap_head(self.trainer.accelerator.unwrap_model(model or self.trainer.model))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.trainer.accelerator.unwrap_model(model or self.trainer.model).set_output_embeddings(self.original)


class UsedRowsLoss(BaseLoss):
    """ms-swift's token-mean cross-entropy over the narrow logits, labels moved to their columns; and its
    token accuracy, which it would otherwise compute from the narrow logits' columns as if they were ids."""

    def __call__(self, outputs, labels, *, num_items_in_batch=None, loss_scale=None, **kwargs):
        from swift.metrics import compute_acc
        from swift.trainers import per_token_loss_func

        head = self.trainer.accelerator.unwrap_model(self.trainer.model).get_output_embeddings()
        if not isinstance(head, UsedRowsHead) or outputs.logits.shape[-1] != len(head.weight) + 1:
            raise RuntimeError(f"{NAME}: the loss ran without the narrow output layer (--callbacks {NAME} missing?)")
        columns = torch.where(labels == -100, -100, head.column.to(labels.device)[labels.clamp(min=0)])
        token_loss = per_token_loss_func(outputs, columns)
        trainer = self.trainer
        accuracy = compute_acc(head.predictions(outputs.logits), labels,
                               acc_strategy=trainer.args.acc_strategy,
                               is_encoder_decoder=trainer.template.is_encoder_decoder)
        for key, value in accuracy.items():
            trainer.custom_metrics["train" if trainer.model.training else "eval"][key].update(value)
        outputs.logits = None       # the trainer skips its own accuracy without logits
        if loss_scale is not None:
            token_loss = token_loss * loss_scale
        if num_items_in_batch is None:
            num_items_in_batch = (labels[:, 1:] != -100).sum()
        return token_loss.sum() / num_items_in_batch


loss_map[NAME] = UsedRowsLoss
callbacks_map[NAME] = UsedRowsCallback
