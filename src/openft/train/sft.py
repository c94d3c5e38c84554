"""Supervised fine-tuning (SFT) as a training objective (openft.train.objective).

Examples are chat (`messages`, optionally `tools`) or legacy prompt/completion lines, tokenized
with their loss masks (openft.data.encode) and packed padding-free into rows
(openft.train.data). The loss is the summed cross-entropy of the trained tokens; a step's loss
is that sum over its micro-batches divided by the step's trained-token count, so packing
changes speed, not the optimizer step. Metrics: `{prefix}_loss` and
`{prefix}_mean_token_accuracy` over the trained tokens, `{prefix}_mean_sequence_accuracy` over the
examples (every trained token right); at each epoch end, when the spec asks
for them, the legacy `classification/*` columns of the whole validation set
(openft.eval.label_scoring).

Knows nothing about jobs, optimizers or the loop's schedule.
"""

from __future__ import annotations

from pathlib import Path

from openft.eval.label_scoring import classification_columns
from openft.train import metrics as M
from openft.train.data import StepBatches, load_dataset, pack
from openft.train.label_scores import epoch_classification
from openft.train.model import evaluate, micro_batch_stats


class SFT:
    pace_suffix = ""

    def __init__(self, spec, tokenizer, device, precision: str):
        self.spec, self.tokenizer, self.device, self.precision = spec, tokenizer, device, precision
        self.csv_columns = classification_columns(spec)

    def load(self, path: str, max_len: int | None, display_name: str):
        return load_dataset(self.tokenizer, path, max_len, display_name)

    def resolve(self, hyperparameters: dict) -> None:
        """SFT has none besides the standard three."""

    def prepare(self, model, data: dict, out: Path, budget: int | None, resumed: bool, hooks) -> str | None:
        return None

    def pack(self, examples: list, budget: int | None) -> list:
        return pack(examples, budget)

    def step_batches(self, model, examples: list, budget: int | None) -> StepBatches:
        return StepBatches(pack(examples, budget), n_target=sum(e.n_trained for e in examples),
                           tokens=sum(len(e) for e in examples))

    def loss(self, model, batch, tally: dict):
        loss_sum, n, correct, right = micro_batch_stats(model, batch.to(self.device), self.precision)
        # device tensors, added up on the device: `metrics` reads them back once per step
        tally["loss"] = tally.get("loss", 0.0) + loss_sum.detach()
        tally["correct"] = tally.get("correct", 0) + correct
        tally["tokens"] = tally.get("tokens", 0) + n
        tally["right"] = tally.get("right", 0) + right       # examples with every trained token right
        tally["examples"] = tally.get("examples", 0) + batch.n_examples
        return loss_sum

    def metrics(self, tally: dict, prefix: str) -> dict:
        n = max(tally.get("tokens", 0), 1)
        return {M.key(prefix, "loss"): float(tally.get("loss", 0.0)) / n,
                M.key(prefix, "mean_token_accuracy"): int(tally.get("correct", 0)) / n,
                M.key(prefix, M.SEQUENCE_ACCURACY): int(tally.get("right", 0)) / max(tally.get("examples", 0), 1)}

    def evaluate(self, model, batches: list, prefix: str) -> dict:
        loss, accuracy, sequences = evaluate(model, batches, self.precision, self.device)
        return {M.key(prefix, "loss"): loss, M.key(prefix, "mean_token_accuracy"): accuracy,
                M.key(prefix, M.SEQUENCE_ACCURACY): sequences}

    def epoch_metrics(self, model) -> dict:
        if not self.spec.compute_classification_metrics:
            return {}
        return epoch_classification(model, self.tokenizer, self.spec, self.device, self.precision)
