"""What a training objective is: the interface the one training loop (openft.train.loop) is given.

An objective decides what an example is and how it is loaded, what micro-batches a step runs,
the loss of a micro-batch, how validation measures the model and which metrics it reports.
The loop decides everything else, the same for every objective: the data order (a step's
examples are a pure function of seed and step, so resuming needs only the step number), the
optimizer, schedule, gradient accumulation over a step's micro-batches (the step's loss is
the sum of the micro-batches' losses divided by `StepBatches.n_target`), when to validate, checkpoints,
pause, cancel and pace.

An objective is picked once, from the spec's `objective`, in `OBJECTIVES` (name -> class; each
class is built with `(spec, tokenizer, device, precision)`), and passed to the loop:

    sft  openft.train.sft.SFT   next-token loss on the trained (assistant) tokens of chat or
                                prompt/completion examples, packed padding-free
    dpo  openft.train.dpo.DPO   preference pairs, TRL's sigmoid DPO loss against the starting
                                model's log-probabilities, reward metrics

A step's micro-batches come from the objective (`step_batches`), given the live model: an objective
that generates its training data from the current policy (rollouts, grading, group-relative
advantages for reinforcement learning) does that inside `step_batches` and needs no change to the
loop. A micro-batch is whatever the objective's `loss` takes; the loop only iterates them.

Metrics: `loss` adds what a micro-batch contributes to a `tally` (a dict the loop starts empty
for each step; values may stay device tensors, read back once per step in `metrics`).
`metrics(tally, prefix)` turns it into the reported values: `{prefix}_loss` and
`{prefix}_mean_token_accuracy` (every objective's, the keys the job's events and the results CSV
read), then the objective's own (DPO: `{prefix}_reward_accuracy`...). The prefixes are `train`
(each step), `valid` (a window of the validation set) and `full_valid` (all of it, each epoch
end).

Knows the spec; nothing about jobs, files other than the data files, optimizers or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from openft.train.data import StepBatches
from openft.train.dpo import DPO
from openft.train.hooks import TrainHooks
from openft.train.sft import SFT


class Example(Protocol):
    """One training example as the loop sees it (for its memory plan and the pack budget)."""

    n_trained: int
    """Its trained positions as the memory plan counts them (SFT: trained tokens; DPO counts a
    pair as 1); SFT and DPO also make it their share of a step's `n_target`."""

    def __len__(self) -> int:
        """Tokens it takes in a packed row."""


class Examples(Protocol):
    """A loaded data file: its usable examples and what was dropped, for the run's events."""

    examples: Sequence[Example]   # only usable ones (at least one trained token)
    n_lines: int                  # lines in the file
    n_truncated: int              # examples cut at the context length
    n_skipped: int                # examples with nothing to train on, left out

    @property
    def n_tokens(self) -> int:
        """Tokens of the examples (reported in the "Training ..." event)."""

    def __len__(self) -> int: ...


@runtime_checkable
class Objective(Protocol):
    pace_suffix: str
    """Appended to the method in the run's measured pace (`pace.json`): runs whose tokens cost
    differently are kept apart ("" for sft, "-dpo")."""
    csv_columns: tuple[str, ...]
    """results.csv columns after the common ones (openft.train.checkpoint.CSV_FIELDS)."""

    def load(self, path: str, max_len: int | None, display_name: str) -> Examples:
        """Read and tokenize a data file, each example cut at `max_len` tokens."""

    def resolve(self, hyperparameters: dict) -> None:
        """Add the objective's own hyperparameters to the run's resolved ones (a resumed run
        keeps those it recorded), before they are reported."""

    def prepare(self, model, data: dict[str, Examples | None], out: Path, budget: int | None, resumed: bool,
                hooks: TrainHooks) -> str | None:
        """Once, after the model is built and before the first step (`data`: {"train", "valid"}).
        Returns the name of the setup phase it ran, for the run's "Setup took" event, or None."""

    def pack(self, examples: list, budget: int | None) -> list:
        """Validation micro-batches of `examples`, each row at most `budget` tokens (None: one
        example per row)."""

    def step_batches(self, model, examples: list, budget: int | None) -> StepBatches:
        """The micro-batches of one optimizer step over `examples` (the step's share of the
        training data, in the loop's data order), with the model as it is now."""

    def loss(self, model, batch, tally: dict):
        """Summed loss of one micro-batch (a 0-d tensor with its graph; the loop divides by the
        step's n_target and calls backward); adds its share of the metrics to `tally`."""

    def metrics(self, tally: dict, prefix: str) -> dict:
        """The reported values of a tally: `{prefix}_loss`, `{prefix}_mean_token_accuracy`, then
        the objective's own."""

    def evaluate(self, model, batches: list, prefix: str) -> dict:
        """`metrics` of `batches` (from `pack`) without gradients, the model in eval mode meanwhile."""

    def epoch_metrics(self, model) -> dict:
        """Metrics of the whole validation set the objective adds at each epoch end besides
        `evaluate`'s (SFT: the classification/* columns when the spec asks for them)."""


OBJECTIVES: dict[str, type[Objective]] = {"sft": SFT, "dpo": DPO}
"""The spec's objective -> its class (openft.train.spec.OBJECTIVES names the same ones)."""
