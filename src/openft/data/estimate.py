"""What a fine-tuning job on a dataset would do: epochs "auto" picks, tokens trained, time.

`auto_n_epochs(n)` is the rule the trainer follows too (`openft.data.auto`, pure arithmetic, no torch).

Time comes from a pace measured on this machine where there is one: the trainer writes
`pace.json` into each job folder (`write_pace`: setup seconds, then processed tokens over
training seconds, evaluations and checkpoints included), `openft.store.pace` reads those of
earlier jobs of the same base model; before any run of that model was measured here,
`table_pace` gives a first guess from the model's size and the device, and says so in its
`source` (the running job's `estimated_finish` then follows its own measured steps). A `Pace` is
handed to `estimate` / `with_pace`. Without a pace there is no time estimate.
Seconds = setup + processed tokens / tokens per second, where processed tokens count every
token of every example each epoch (masked tokens cost the same forward and backward pass).

Knows nothing about tokenizers, jobs or the database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from openft.data.auto import auto_n_epochs  # the trainer's rule too: estimates match what a job does

PACE_FILE = "pace.json"


@dataclass(frozen=True)
class Pace:
    tokens_per_second: float   # processed tokens per second of training (evals, checkpoints included)
    setup_seconds: float       # before the first step: loading the model, tokenizing
    source: str                # where it comes from, for messages: "2 earlier jobs", "a 3-step probe"


def write_pace(folder: str | Path, *, base_model: str, method: str, device: str, setup_seconds: float,
               steps: int, processed_tokens: int, seconds: float) -> None:
    """Record a run's measured pace in its folder (the trainer calls this when it stops)."""
    if steps <= 0 or seconds <= 0 or processed_tokens <= 0:
        return
    rec = {"base_model": base_model, "method": method, "device": device, "setup_seconds": round(setup_seconds, 3),
           "steps": steps, "processed_tokens": processed_tokens, "seconds": round(seconds, 3),
           "tokens_per_second": round(processed_tokens / seconds, 3)}
    tmp = Path(folder) / f".{PACE_FILE}.tmp"
    tmp.write_text(json.dumps(rec, indent=2))
    os.replace(tmp, Path(folder) / PACE_FILE)


def read_pace(folder: str | Path) -> dict | None:
    """A folder's recorded pace, or None (none written, or unreadable)."""
    try:
        rec = json.loads((Path(folder) / PACE_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(rec, dict) and all(isinstance(rec.get(k), (int, float)) and rec[k] >= 0
                                       for k in ("setup_seconds", "processed_tokens", "seconds"))
    return rec if ok and rec["seconds"] > 0 and rec["processed_tokens"] > 0 else None


def combine(records: list[dict], source: str) -> Pace | None:
    """One pace from several runs: all their tokens over all their seconds; the median setup."""
    if not records:
        return None
    setups = sorted(r["setup_seconds"] for r in records)
    return Pace(sum(r["processed_tokens"] for r in records) / sum(r["seconds"] for r in records),
                setups[len(setups) // 2], source)


def estimate(*, n_examples: int, total_tokens: int, trained_tokens: int, n_epochs: int | None = None,
             pace: Pace | None = None) -> dict:
    """The job's epochs, tokens and (when a measured pace is given) seconds on this machine."""
    epochs = n_epochs or auto_n_epochs(n_examples)
    est = {"n_examples": n_examples, "n_epochs": epochs, "n_epochs_is_auto": n_epochs is None,
           "tokens_per_epoch": total_tokens, "trained_tokens_per_epoch": trained_tokens,
           "processed_tokens": total_tokens * epochs, "trained_tokens": trained_tokens * epochs}
    return with_pace(est, pace)


def with_pace(est: dict, pace: Pace | None) -> dict:
    """`est` with `tokens_per_second`, `estimated_seconds` and `pace_source` from `pace` (None: unknown)."""
    seconds = round(pace.setup_seconds + est["processed_tokens"] / pace.tokens_per_second) if pace else None
    return {**est, "tokens_per_second": pace.tokens_per_second if pace else None, "estimated_seconds": seconds,
            "pace_source": pace.source if pace else None}


# A first guess for a machine that has measured nothing yet: LoRA training processes a token in
# about 6 FLOPs per parameter (forward and backward), at these sustained FLOP/s per device; the
# setup is loading the model and tokenizing. Replaced by the job's own measured pace as it runs.
TABLE_FLOPS = {"cpu": 4e10, "cuda": 4e13}
TABLE_SETUP_SECONDS = {"cpu": 15.0, "cuda": 30.0}
TABLE_SOURCE = "a table for {size}-parameter models on {device}, until this job's own steps are measured"


def table_pace(parameters: int | None, device: str) -> Pace | None:
    """The table's pace for a model of `parameters` on `device` ("cpu" | "cuda"); None if the size is unknown."""
    if not parameters or parameters <= 0:
        return None
    device = device if device in TABLE_FLOPS else "cpu"
    size = f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{max(1, round(parameters / 1e6))}M"
    return Pace(TABLE_FLOPS[device] / (6 * parameters), TABLE_SETUP_SECONDS[device],
                TABLE_SOURCE.format(size=size, device=device.upper() if device == "cpu" else "CUDA"))


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no pace measured on this machine for this model yet)"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
