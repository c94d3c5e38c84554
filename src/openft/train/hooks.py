"""How the training loop talks to whoever runs it (the job runner, tests, benchmarks).

The loop calls these hooks; it does not know about the database, events or HTTP.
`RecordingHooks` keeps everything in lists (tests, benchmarks, scripts) and can be told to
pause or cancel after a given step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

StopRequest = Literal["cancel", "pause"] | None


@runtime_checkable
class TrainHooks(Protocol):
    def on_event(self, message: str, level: str = "info") -> None:
        """Free-text event for the job's event list (truncation counts, resolved settings...)."""

    def on_resolved(self, hyperparameters: dict) -> None:
        """Concrete n_epochs, batch_size, learning_rate_multiplier; once, before step 1."""

    def on_metrics(self, data: dict) -> None:
        """Every step: step, train_loss, train_mean_token_accuracy, total_steps; plus valid_loss,
        valid_mean_token_accuracy, full_valid_loss, full_valid_mean_token_accuracy when measured;
        plus the objective's own (openft.train.objective: DPO's rewards, classification/*)."""

    def on_progress(self, step: int, total_steps: int, trained_tokens: int, estimated_finish: int | None) -> None:
        """After every step; estimated_finish is a Unix time from the measured pace."""

    def on_checkpoint(self, step: int, epoch: int, path: str, metrics: dict) -> None:
        """A checkpoint folder was written (PEFT adapter or full model + trainer_state/)."""

    def on_checkpoint_removed(self, path: str) -> None:
        """A checkpoint folder was deleted (older than the last keep_checkpoints)."""

    def should_stop(self) -> StopRequest:
        """Polled between steps: None to go on, "pause" (checkpoint, then stop) or "cancel"."""


@dataclass
class RecordingHooks:
    """Records every call; `pause_after` / `cancel_after` request a stop after that step."""

    pause_after: int | None = None
    cancel_after: int | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    resolved: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    progress: list[tuple[int, int, int, int | None]] = field(default_factory=list)
    checkpoints: list[tuple[int, int, str, dict]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    echo: bool = False

    def on_event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))
        if self.echo:
            print(f"[{level}] {message}", flush=True)

    def on_resolved(self, hyperparameters: dict) -> None:
        self.resolved.append(dict(hyperparameters))

    def on_metrics(self, data: dict) -> None:
        self.metrics.append(dict(data))
        if self.echo:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items()), flush=True)

    def on_progress(self, step, total_steps, trained_tokens, estimated_finish) -> None:
        self.progress.append((step, total_steps, trained_tokens, estimated_finish))

    def on_checkpoint(self, step, epoch, path, metrics) -> None:
        self.checkpoints.append((step, epoch, path, dict(metrics)))

    def on_checkpoint_removed(self, path) -> None:
        self.removed.append(path)

    def should_stop(self) -> StopRequest:
        step = self.progress[-1][0] if self.progress else 0
        if self.cancel_after is not None and step >= self.cancel_after:
            return "cancel"
        if self.pause_after is not None and step >= self.pause_after:
            return "pause"
        return None

    def losses(self) -> dict[int, float]:
        return {m["step"]: m["train_loss"] for m in self.metrics}
