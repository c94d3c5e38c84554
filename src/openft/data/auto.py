"""Resolve "auto" hyperparameters from the dataset size, the way OpenAI's fine-tuning does.

Rules (documented in benchmarks/README-train.md and docs/trainer.md):
- n_epochs: OpenAI cookbook rule. Start at 3; if 3 * N < 100, raise to ceil(100 / N) (at most
  25); if 3 * N > 25,000, lower to floor(25,000 / N) (at least 1).
- batch_size: about 0.2% of the examples, ceil(0.002 * N), clamped to [1, 256]. Memory never
  limits it here: the trainer packs micro-batches by a token budget and accumulates gradients,
  so a larger batch costs time, not memory.
- learning_rate_multiplier: 0.05 for batch size 1, 0.1 for 2..15, 0.2 for 16 and more (larger
  batches take larger steps); the learning rate is BASE_LEARNING_RATE[method] * multiplier.

The trainer (openft.train) resolves a job's "auto" values here, and the data toolkit's estimates
(openft.data.estimate) use the same rules, so an estimate matches what the job does; it lives in
`data`, below the trainer, so that the data toolkit never imports the trainer.

Pure functions of numbers: knows nothing about files, models or jobs.
"""

from __future__ import annotations

import math

BASE_LEARNING_RATE = {"lora": 2e-3, "qlora": 2e-3, "full": 1e-4}
"""Per method; the learning rate used is this times learning_rate_multiplier."""

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_EPOCHS = 1
MAX_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """The epoch count "auto" picks for a training file of n_examples (the data toolkit calls this)."""
    n = max(1, int(n_examples))
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, in [1, 256]."""
    return max(1, min(256, math.ceil(0.002 * max(1, int(n_examples)))))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    if batch_size <= 1:
        return 0.05
    if batch_size < 16:
        return 0.1
    return 0.2


def resolve_hyperparameters(n_examples: int, n_epochs="auto", batch_size="auto",
                            learning_rate_multiplier="auto") -> dict:
    """Concrete {n_epochs, batch_size, learning_rate_multiplier}; given values pass through."""
    ne = auto_n_epochs(n_examples) if n_epochs == "auto" else int(n_epochs)
    bs = auto_batch_size(n_examples) if batch_size == "auto" else int(batch_size)
    bs = min(bs, max(1, int(n_examples)))  # a step never asks for more examples than there are
    lrm = auto_learning_rate_multiplier(bs) if learning_rate_multiplier == "auto" else float(learning_rate_multiplier)
    return {"n_epochs": ne, "batch_size": bs, "learning_rate_multiplier": lrm}


def learning_rate(method: str, multiplier: float) -> float:
    return BASE_LEARNING_RATE[method] * multiplier
