"""The names of the metrics the trainer reports, each defined once, with a readable label.

A step's metrics are `<split>_<quantity>`: splits `train` (the step's batch), `valid` (a window
of the validation file, every eval_every_steps) and `full_valid` (the whole validation file, once
per epoch); quantities `loss` and `mean_token_accuracy` for every job, plus the reward metrics of
preference (DPO) jobs, or the sequence accuracy and elapsed tokens/examples of supervised ones.
The results CSV (results.csv, OpenAI's columns) names a few of them differently, and so does the
legacy results file (`fine_tunes.results`); both files' columns are here too.

Read by the trainer (openft.train.loop, .dpo, .checkpoint), the job hooks that store the metrics
(openft.jobs.hooks), the API that serves them (checkpoints, GET .../metrics, which also gives the
dashboard these names and labels). Pure names: no torch, nothing about jobs or HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping

SPLITS = ("train", "valid", "full_valid")
QUANTITIES = ("loss", "mean_token_accuracy")
"""What every job reports, per split."""
REWARD_QUANTITIES = ("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")
"""What a DPO job reports besides, per split: TRL's rewards/accuracies, rewards/margins,
rewards/chosen, rewards/rejected."""


def key(split: str, quantity: str) -> str:
    """The metric key of a quantity on a split: `valid_loss`."""
    return f"{split}_{quantity}"


METRIC_KEYS = ("step",) + tuple(key(s, q) for s in SPLITS for q in QUANTITIES)
"""Every job's metrics: step, train_loss, train_mean_token_accuracy, valid_loss, ..."""
DPO_METRIC_KEYS = tuple(key(s, q) for s in SPLITS for q in REWARD_QUANTITIES)
"""DPO jobs only: train_reward_accuracy, train_reward_margin, ..., full_valid_rejected_reward."""
SEQUENCE_ACCURACY = "mean_sequence_accuracy"
"""What a supervised job reports besides, per split: the share of sequences (examples) whose every
trained token was predicted right (the legacy results file's *_sequence_accuracy)."""
ELAPSED_KEYS = ("elapsed_tokens", "elapsed_examples")
"""Every step: the tokens and examples trained on since the job began, cumulative (counted again
when an epoch repeats them)."""
SFT_METRIC_KEYS = ELAPSED_KEYS + tuple(key(s, SEQUENCE_ACCURACY) for s in SPLITS)
"""Reported when present (a job from before they existed has none): elapsed_tokens,
elapsed_examples, train_mean_sequence_accuracy, valid_..., full_valid_mean_sequence_accuracy."""
CLASSIFICATION_PREFIX = "classification/"
"""The legacy classification columns (compute_classification_metrics) start with this."""


def reported(data: Mapping) -> dict:
    """The metrics of a step (an event's data, a checkpoint's metrics) as openft stores and serves
    them: every METRIC_KEYS key (None when absent), the DPO and SFT_METRIC_KEYS keys present, the
    classification/* ones."""
    return {**{k: data.get(k) for k in METRIC_KEYS},
            **{k: data[k] for k in DPO_METRIC_KEYS + SFT_METRIC_KEYS if k in data},
            **{k: v for k, v in data.items() if k.startswith(CLASSIFICATION_PREFIX)}}

CSV_FIELDS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
"""results.csv's columns, as OpenAI names them (train_accuracy is train_mean_token_accuracy)."""
CSV_SOURCES = {"train_accuracy": key("train", "mean_token_accuracy")}
"""A CSV column whose metric key differs from its name."""
DPO_CSV_FIELDS = CSV_FIELDS + tuple(key(s, q) for s in ("train", "valid") for q in REWARD_QUANTITIES)
"""A DPO run's columns: the supervised ones, then its rewards."""

LEGACY_CSV_SOURCES = {
    "step": "step", "elapsed_tokens": "elapsed_tokens", "elapsed_examples": "elapsed_examples",
    "training_loss": key("train", "loss"), "training_sequence_accuracy": key("train", SEQUENCE_ACCURACY),
    "training_token_accuracy": key("train", "mean_token_accuracy"), "validation_loss": key("valid", "loss"),
    "validation_sequence_accuracy": key("valid", SEQUENCE_ACCURACY),
    "validation_token_accuracy": key("valid", "mean_token_accuracy")}
"""The legacy results file's columns (`openai api fine_tunes.results`, `openft api fine_tunes.results`)
and the metric each is; the classification/* columns follow them when the job computed them."""
LEGACY_CSV_FIELDS = tuple(LEGACY_CSV_SOURCES)

SPLIT_LABELS = {"train": "training", "valid": "validation", "full_valid": "full validation"}
QUANTITY_LABELS = {"loss": "loss", "mean_token_accuracy": "token accuracy", "reward_accuracy": "reward accuracy",
                   "reward_margin": "reward margin", "chosen_reward": "chosen reward",
                   "rejected_reward": "rejected reward"}


def label(split: str, quantity: str) -> str:
    """A metric's readable name: `validation loss`, `full validation token accuracy (per epoch)`."""
    text = f"{SPLIT_LABELS[split]} {QUANTITY_LABELS[quantity]}"
    return f"{text} (per epoch)" if split == "full_valid" else text
