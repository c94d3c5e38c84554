"""The pace to estimate a job's training time with: earlier jobs' paces, else a short probe run.

`pace_for_job(settings, engine, job, n_examples)`: the paces earlier jobs of the same base model
and method recorded (openft.store.pace.history_pace), else a short probe of the real trainer on
the job's own training file (openft.train.probe, in a child process), kept for a day beside the
converted models (`<model cache>/pace/`: a property of this machine and that model, shared by
every data folder) so that the jobs queued before the first one finishes probe once. Each `Pace`
says where it comes from ("2 earlier jobs of openft-tiny", "a 3-step probe").

Here rather than in openft.store because it starts a training run, which is the jobs layer's to
start. Knows the files table, the blob store and the probe's interface; knows nothing about HTTP.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import sqlalchemy as sa

from openft.config import Settings
from openft.data.estimate import Pace
from openft.store.blobs import stored_file
from openft.store.pace import history_pace
from openft.train import rules

PROBE_TTL_SECONDS = 86_400   # a probe's pace is reused this long while no job has finished


def _probe_file(settings: Settings, base_model: str, method: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base_model)
    return settings.resolved_model_cache_dir() / "pace" / f"probe-{safe}-{method}.json"


def pace_for_job(settings: Settings, engine: sa.Engine, job, n_examples: int, *, probe: bool = True) -> Pace | None:
    """The pace to estimate `job` (a jobs row) with: earlier jobs, else a (cached) probe; None if neither.
    probe=False: only what is known already (no new probe run)."""
    hp = rules.hyperparameters(job.method)
    method = hp.get("method") if isinstance(hp.get("method"), str) else "lora"
    pace = history_pace(engine, job.base_model, method)
    if pace is not None:
        return pace
    cache = _probe_file(settings, job.base_model, method)
    try:
        rec = json.loads(cache.read_text())
        if time.time() - rec["measured_at"] < PROBE_TTL_SECONDS:
            return Pace(rec["tokens_per_second"], rec["setup_seconds"], rec["source"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not probe:
        return None
    with engine.connect() as conn:
        found = stored_file(conn, settings.layout, job.training_file)
    if found is None:
        return None
    from openft.train.probe import run_probe

    pace = run_probe(settings, job.base_model, found.path, n_examples, hp)
    if pace is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"tokens_per_second": pace.tokens_per_second, "setup_seconds": pace.setup_seconds,
                                     "source": pace.source, "measured_at": time.time()}))
    return pace
