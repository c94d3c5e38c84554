"""Training data: read JSONL (openft.data's reader), tokenize with masks, order by epoch, pack.

A step takes `batch_size` examples (a seeded permutation per epoch, so the order is a pure
function of seed and epoch and resuming needs only the step number). The step's examples are
packed into micro-batches of one row each, up to a token budget, first-fit by decreasing
length: no padding, each example keeps its own `position_ids` starting at 0 (the model's mask
builder turns restarting positions into a block-diagonal causal mask, so no example attends
to another) and its first token is never a target. The loss of a step is the sum of token
losses over all micro-batches divided by the step's trained-token count, so packing changes
speed, not the optimizer step.

Knows nothing about models, optimizers or jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from openft.data.reader import iter_records
from openft.errors import DataError
from openft.train.tokenize import Encoded, encode_example

IGNORE = -100


@dataclass
class TokenizedData:
    examples: list[Encoded]   # only examples with at least one trained token
    n_lines: int
    n_truncated: int
    n_skipped: int            # no trained token left (all weights 0, or truncated away)

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.examples)

    def __len__(self) -> int:
        return len(self.examples)


def load_dataset(tokenizer, path: str | Path, max_seq_len: int | None, display_name: str | None = None) -> TokenizedData:
    name = display_name or Path(path).name
    examples, truncated, skipped, n_lines = [], 0, 0, 0
    # the data toolkit's reader, so the trainer reads a file exactly as validation did
    for lineno, _text, row in iter_records(path, name=name):
        n_lines += 1
        try:
            enc = encode_example(tokenizer, row, max_seq_len)
        except DataError as e:  # add where: file and line
            raw = e.message[len(e.locate("")):] if e.field else e.message
            raise DataError(raw, file=name, line=lineno, field=e.field, code=e.code) from e
        truncated += enc.truncated
        if enc.n_trained == 0:
            skipped += 1
            continue
        examples.append(enc)
    return TokenizedData(examples, n_lines, truncated, skipped)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_indices(n: int, batch_size: int, seed: int, step: int) -> tuple[int, list[int]]:
    """(epoch, example indices) of global step `step` (0-based); the last batch may be short."""
    per_epoch = -(-n // batch_size)
    epoch, i = divmod(step, per_epoch)
    return epoch, epoch_order(n, seed, epoch)[i * batch_size:(i + 1) * batch_size]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor     # (1, T) long
    position_ids: torch.Tensor  # (1, T) long, restarting at 0 for each example
    labels: torch.Tensor        # (1, T) long: target of position t, IGNORE where not trained
    n_examples: int

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_trained(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device) -> "MicroBatch":
        return MicroBatch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device), self.n_examples)


def _row(examples: list[Encoded]) -> MicroBatch:
    ids, pos, lab = [], [], []
    for e in examples:
        ids += e.input_ids
        pos += range(len(e))
        lab += [IGNORE] + [t if m else IGNORE for t, m in zip(e.input_ids[1:], e.mask[1:])]
    as_t = lambda x: torch.tensor(x, dtype=torch.long).unsqueeze(0)  # noqa: E731
    return MicroBatch(as_t(ids), as_t(pos), as_t(lab), len(examples))


def pack(examples: list[Encoded], budget: int | None) -> list[MicroBatch]:
    """Rows of at most `budget` tokens (first-fit decreasing); budget None: one example per row."""
    if budget is None:
        return [_row([e]) for e in examples]
    bins: list[tuple[int, list[Encoded]]] = []
    for e in sorted(examples, key=len, reverse=True):
        for k, (used, members) in enumerate(bins):
            if used + len(e) <= budget:
                members.append(e)
                bins[k] = (used + len(e), members)
                break
        else:
            bins.append((len(e), [e]))
    return [_row(members) for _, members in bins]
