"""A short training probe: this machine's training pace for a base model, measured by the trainer.

`run_probe(settings, base_model, train_file, n_examples, hyperparameters)` starts
`python -m openft.train.probe` in a child process (its own memory and threads, bounded in time,
so a probe never breaks the server that asks; it does share the machine's cores for those
seconds, and measures the pace under whatever load there is; it dies with the process that
started it: openft.procs.die_with_parent). The child copies the first examples of the
training file (read with openft.data's reader), runs the real trainer (`train`) for `steps`
optimizer steps with the job's batch size and pace-relevant settings in a temporary folder, and
prints the pace the trainer recorded there (`pace.json`, see openft.data.estimate).

Used when no earlier job of the model measured a pace. Knows the trainer; knows nothing about
jobs or the database.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from openft.config import Settings
from openft.data.estimate import Pace, read_pace
from openft.procs import die_with_parent, parent_env

log = logging.getLogger("openft.train.probe")

# TrainSpec fields that change how fast a step runs; the others (learning rate, seed...) do not.
PACE_FIELDS = ("method", "lora_r", "target_modules", "max_seq_len", "packing", "pack_tokens", "precision",
               "num_threads")
PROBE_STEPS = 3
PARENT_ENV = "OPENFT_PROBE_PARENT_PID"


def run_probe(settings: Settings, base_model: str, train_file: str | Path, n_examples: int,
              hyperparameters: dict, *, steps: int = PROBE_STEPS, timeout: float = 300.0) -> Pace | None:
    """The pace of `steps` training steps on this machine, or None when the probe fails."""
    request = {"base_model": base_model, "train_file": str(train_file), "n_examples": n_examples, "steps": steps,
               "hyperparameters": {k: v for k, v in hyperparameters.items() if k in PACE_FIELDS or k == "batch_size"},
               "data_dir": str(Path(settings.data_dir).resolve()),
               "model_cache_dir": str(settings.resolved_model_cache_dir()), "device": settings.device}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENFT_")}  # no credentials
    env.update(parent_env(PARENT_ENV))   # the child dies with this process (a server killed with -9)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        done = subprocess.run([sys.executable, "-m", "openft.train.probe"], input=json.dumps(request), env=env,
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("pace probe for %s did not finish: %s", base_model, e)
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log.warning("pace probe for %s failed (exit %s): %s", base_model, done.returncode, done.stderr[-2000:])
        return None
    try:
        rec = json.loads(lines[-1])
        return Pace(rec["processed_tokens"] / rec["seconds"], rec["setup_seconds"], f"a {steps}-step probe")
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        log.warning("pace probe for %s printed no pace: %s", base_model, lines[-1][:200])
        return None


def _probe(req: dict) -> dict | None:
    from openft.data.auto import resolve_hyperparameters
    from openft.data.reader import iter_records
    from openft.train.hooks import RecordingHooks
    from openft.train.loop import train
    from openft.train.spec import TrainSpec

    hp = req["hyperparameters"]
    steps = int(req["steps"])
    bs = resolve_hyperparameters(int(req["n_examples"]), batch_size=hp.get("batch_size", "auto"))["batch_size"]
    want = bs * (steps + 2)  # a warm-up step, `steps` measured ones, and no epoch-end checkpoint inside
    settings = Settings(data_dir=req["data_dir"], model_cache_dir=req["model_cache_dir"], device=req["device"])
    with tempfile.TemporaryDirectory(prefix="openft-probe-") as tmp:
        sample = Path(tmp) / "train.jsonl"
        n = 0
        with open(sample, "w", encoding="utf-8") as f:
            for _, text, _rec in iter_records(req["train_file"], name="training_file"):
                f.write(text + "\n")
                n += 1
                if n >= want:
                    break
        kwargs = {k: (tuple(v) if k == "target_modules" else v) for k, v in hp.items()
                  if k in PACE_FIELDS and v is not None}
        spec = TrainSpec(base_model=req["base_model"], train_file=str(sample), output_dir=str(Path(tmp) / "run"),
                         n_epochs=-(-want // max(1, n)), batch_size=min(bs, max(1, n)), learning_rate_multiplier=1.0,
                         device=settings.device, keep_checkpoints=1, **kwargs)
        train(spec, RecordingHooks(cancel_after=steps + 1), settings)  # the trainer times steps after the first
        return read_pace(Path(tmp) / "run")


def main() -> None:  # `python -m openft.train.probe` < request JSON > pace JSON
    die_with_parent(PARENT_ENV)
    rec = _probe(json.loads(sys.stdin.read()))
    if rec is None:
        sys.exit("the probe recorded no pace")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
