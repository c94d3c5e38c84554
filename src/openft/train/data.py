"""Training data: read JSONL (openft.data's reader), tokenize with masks, order by epoch, pack.

A step takes `batch_size` examples (a seeded permutation per epoch, so the order is a pure
function of seed and epoch and resuming needs only the step number). The step's examples are
packed into micro-batches of one row each, up to a token budget, first-fit by decreasing
length: no padding, each example keeps its own `position_ids` starting at 0 (openft.train.attention
reads the restarts, or the row's `cu_seqlens`, so no example attends to another) and its first
token is never a target. A row carries its example boundaries (`cu_seqlens`, `max_len`) and
trained positions (`target_index`), computed here on the host, so that the training step needs
no read-back from the GPU to find them. The loss of a step is the sum of token
losses over all micro-batches divided by the step's trained-token count, so packing changes
speed, not the optimizer step. `StepBatches` is what an objective hands the loop for one step
(openft.train.objective): its micro-batches, the divisor of its loss and the tokens it processed.

Knows nothing about models, optimizers or jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from openft.data.encode import Encoded, encode_examples
from openft.data.reader import iter_records
from openft.errors import DataError

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
    # the data toolkit's reader, so the trainer reads a file exactly as validation did
    lines, rows = [], []
    for lineno, _text, row in iter_records(path, name=name):
        lines.append(lineno)
        rows.append(row)

    def locate(i: int, e: DataError):  # add where: file and line
        raw = e.message[len(e.locate("")):] if e.field else e.message
        raise DataError(raw, file=name, line=lines[i], field=e.field, code=e.code) from e

    examples, truncated, skipped = [], 0, 0
    for enc in encode_examples(tokenizer, rows, max_seq_len, on_error=locate):
        truncated += enc.truncated
        if enc.n_trained == 0:
            skipped += 1
            continue
        examples.append(enc)
    return TokenizedData(examples, len(rows), truncated, skipped)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_indices(n: int, batch_size: int, seed: int, step: int) -> tuple[int, list[int]]:
    """(epoch, example indices) of global step `step` (0-based); the last batch may be short."""
    per_epoch = -(-n // batch_size)
    epoch, i = divmod(step, per_epoch)
    return epoch, epoch_order(n, seed, epoch)[i * batch_size:(i + 1) * batch_size]


def examples_seen(n: int, batch_size: int, steps: int) -> int:
    """Examples trained on in the first `steps` steps (step_indices' batches; an epoch's last may be short)."""
    per_epoch = -(-n // batch_size)
    epochs, i = divmod(steps, per_epoch)
    return epochs * n + min(i * batch_size, n)


@dataclass(frozen=True)
class StepBatches:
    """The micro-batches of one optimizer step (made by an objective, run by the loop)."""
    batches: list     # micro-batches in order; each is one `Objective.loss` call (forward and backward)
    n_target: int     # the step's loss is the sum of the micro-batches' losses divided by this
    tokens: int       # tokens the step processed (the run's trained_tokens and measured pace)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor     # (1, T) long
    position_ids: torch.Tensor  # (1, T) long, restarting at 0 for each example
    labels: torch.Tensor        # (1, T) long: target of position t, IGNORE where not trained
    n_examples: int
    cu_seqlens: torch.Tensor    # (n_examples + 1,) int32: where each example starts, then T
    max_len: int                # the longest example's length (host int: varlen kernels take it)
    target_index: torch.Tensor  # (n,) long: positions t whose next token t+1 is trained
    forks = False               # SFT rows never fork (openft.train.dpo's rows may)

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_trained(self) -> int:
        return self.target_index.shape[0]  # known on the host, wherever the tensors are

    def to(self, device) -> MicroBatch:
        return MicroBatch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device),
                          self.n_examples, self.cu_seqlens.to(device), self.max_len, self.target_index.to(device))


def _row(examples: list[Encoded]) -> MicroBatch:
    """One packed row; the boundaries and trained positions are computed here, on the host, so
    the training step never reads them back from the device."""
    ids, pos, lab, cu = [], [], [], [0]
    for e in examples:
        ids += e.input_ids
        pos += range(len(e))
        lab += [IGNORE] + [t if m else IGNORE for t, m in zip(e.input_ids[1:], e.mask[1:])]
        cu.append(cu[-1] + len(e))

    def as_t(x):
        return torch.tensor(x, dtype=torch.long).unsqueeze(0)

    targets = [t for t in range(len(lab) - 1) if lab[t + 1] != IGNORE]
    return MicroBatch(as_t(ids), as_t(pos), as_t(lab), len(examples), torch.tensor(cu, dtype=torch.int32),
                      max((len(e) for e in examples), default=0), torch.tensor(targets, dtype=torch.long))


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
