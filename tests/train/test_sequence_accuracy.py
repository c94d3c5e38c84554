"""The legacy results file's numbers (issue 21, 3.2): sequence accuracy (every trained token of an
example right) in a packed row, and the cumulative examples of the first N steps."""

from __future__ import annotations

import torch

from openft.data.encode import Encoded
from openft.train.data import examples_seen, pack, step_indices
from openft.train.model import sequences_right


def test_sequence_accuracy_counts_examples_with_every_trained_token_right():
    a = Encoded([1, 2, 3, 4], [0, 0, 1, 1])      # 2 trained targets
    b = Encoded([5, 6, 7], [0, 1, 1])            # 2 trained targets
    c = Encoded([8, 9, 10, 11, 12], [0, 0, 0, 0, 1])  # 1 trained target
    (row,) = pack([a, b, c], 4096)
    assert row.n_examples == 3 and row.n_trained == 5
    everything = torch.ones(5, dtype=torch.bool)
    assert int(sequences_right(row, everything)) == 3
    one_wrong_in_b = torch.tensor([True, True, False, True, True])  # targets in order: a a b b c
    assert int(sequences_right(row, one_wrong_in_b)) == 2
    only_c_wrong = torch.tensor([True, True, True, True, False])
    assert int(sequences_right(row, only_c_wrong)) == 2
    assert int(sequences_right(row, ~everything)) == 0


def test_examples_seen_is_the_sum_of_the_step_batches():
    for n, bs in ((12, 4), (10, 4), (7, 7), (5, 8)):
        for steps in range(0, 9):
            assert examples_seen(n, bs, steps) == sum(len(step_indices(n, bs, 0, s)[1]) for s in range(steps))
