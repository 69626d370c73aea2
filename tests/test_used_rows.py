"""The used-rows plugin (stages/training/used_rows.py): the narrow head's loss, gradients and argmax are the full
head's, on an output layer with zero rows like the builtin model's; and which runs take it (plugins.py)."""
import copy

import pytest
import torch

from stages.common import load_params
from stages.training.plugins import SPEED, plugin_argv
from stages.training.used_rows import UsedRowsHead, column_of, swap_head, used_rows
from tests.conftest import shipped

VOCAB, HIDDEN, USED = 3000, 16, [0, 1, 2, 5, 40, 41, 2999]


def zero_row_weight(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    weight = torch.zeros(VOCAB, HIDDEN, dtype=torch.float64)
    weight[USED] = torch.randn(len(USED), HIDDEN, generator=g, dtype=torch.float64) * 3
    return weight


def test_used_rows_and_their_columns():
    rows = used_rows(zero_row_weight())
    assert rows.tolist() == USED
    column = column_of(rows, VOCAB)
    assert column[USED].tolist() == list(range(len(USED)))
    assert set(column[[3, 4, 100, 2998]].tolist()) == {len(USED)}


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_the_narrow_loss_and_gradients_are_the_full_heads(scale):
    weight = zero_row_weight()
    head = UsedRowsHead(weight)
    g = torch.Generator().manual_seed(1)
    hidden = (torch.randn(4, 9, HIDDEN, generator=g, dtype=torch.float64) * scale).requires_grad_()
    labels = torch.tensor(USED)[torch.randint(len(USED), (4, 9), generator=g)]
    labels[0, :3] = -100

    full = torch.nn.functional.cross_entropy((hidden @ weight.T).flatten(0, 1), labels.flatten(), ignore_index=-100)
    (full_grad,) = torch.autograd.grad(full, hidden)
    columns = torch.where(labels == -100, -100, head.column[labels.clamp(min=0)])
    narrow = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), columns.flatten(), ignore_index=-100)
    (narrow_grad,) = torch.autograd.grad(narrow, hidden)

    assert head(hidden).shape[-1] == len(USED) + 1
    torch.testing.assert_close(narrow, full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(narrow_grad, full_grad, rtol=1e-10, atol=1e-12)


def test_predictions_are_the_full_heads_argmax_wherever_it_can_match_a_label():
    weight = zero_row_weight()
    head = UsedRowsHead(weight)
    # at about 1 position in 2**7 every used row scores below 0, and the full argmax is a zero row
    hidden = torch.randn(2000, HIDDEN, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = (hidden @ weight.T).argmax(dim=-1)
    narrow = head.predictions(head(hidden))
    on_zero_row = ~torch.isin(full, torch.tensor(USED))
    assert on_zero_row.any() and (~on_zero_row).any()
    assert (narrow[~on_zero_row] == full[~on_zero_row]).all()
    assert (narrow[on_zero_row] == -1).all()          # a zero row: matches no label, as the full argmax's does


class Tied(torch.nn.Module):
    """The two methods swap_head uses, on a plain nn.Linear output layer."""

    def __init__(self, weight: torch.Tensor, trainable: bool = False):
        super().__init__()
        self.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = torch.nn.Parameter(weight.float(), requires_grad=trainable)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, head):
        self.lm_head = head


def test_swap_head_puts_the_narrow_head_in_and_refuses_what_would_make_it_wrong():
    model = Tied(zero_row_weight())
    original, head = swap_head(model)
    assert model.lm_head is head and isinstance(original, torch.nn.Linear)
    with pytest.raises(RuntimeError, match="frozen"):
        swap_head(Tied(zero_row_weight(), trainable=True))     # trained rows would not stay zero
    with pytest.raises(RuntimeError, match="no zero rows"):
        swap_head(Tied(torch.ones(VOCAB, HIDDEN)))


def test_only_the_builtin_model_under_lora_with_its_output_layer_untouched_takes_the_plugin():
    p = shipped(load_params())   # the embedded default's case, whatever experiment params.yaml holds
    assert "--loss_type" in plugin_argv(p)

    def changed(section, key, value):
        q = copy.deepcopy(p)
        q[section][key] = value
        return plugin_argv(q)

    only_speed = ["--external_plugins", *SPEED]     # every run takes the vision tower's speed plugins
    assert changed("model", "source", "local") == only_speed
    assert changed("train", "tuner_type", "full") == only_speed
    assert changed("train", "use_liger_kernel", True) == only_speed
    assert changed("lora", "modules_to_save", ["lm_head"]) == only_speed
    assert changed("lora", "target_modules", ["all-linear", "embed_tokens"]) == only_speed
    assert changed("lora", "rank", 32) == plugin_argv(p)
