"""This machine's measured training pace per base model, for the time estimate at validation.

`history_pace(engine, base_model, method)`: the paces the trainer recorded (`pace.json` in the
job folder, openft.data.estimate) in the last succeeded jobs of that base model and method.
`pace_for_job(settings, engine, job, n_examples)`: that history, else a short probe of the real
trainer on the job's own training file (openft.train.probe, in a child process), kept for a day
beside the converted models (`<model cache>/pace/`: a property of this machine and that model,
shared by every data folder) so that the jobs queued before the first one finishes probe once.
Each `Pace` says where it comes from ("2 earlier jobs of openft-tiny", "a 3-step probe").

Knows the jobs and files tables and the job folders; knows nothing about HTTP or how training works.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import sqlalchemy as sa

from openft.config import Settings
from openft.data.estimate import Pace, combine, read_pace
from openft.store.blobs import stored_file
from openft.store.db import jobs
from openft.train import rules

HISTORY_JOBS = 5             # the newest this-many matching jobs
PROBE_TTL_SECONDS = 86_400   # a probe's pace is reused this long while no job has finished


def history_pace(engine: sa.Engine, base_model: str, method: str = "lora", *, limit: int = HISTORY_JOBS
                 ) -> Pace | None:
    """The pace of the newest succeeded jobs of `base_model` trained with `method`, or None."""
    with engine.connect() as conn:
        folders = conn.execute(
            sa.select(jobs.c.output_dir).where(jobs.c.base_model == base_model, jobs.c.status == "succeeded",
                                               jobs.c.output_dir.is_not(None))
            .order_by(jobs.c.finished_at.desc(), jobs.c.seq.desc()).limit(limit * 4)).scalars().all()
    records = [r for r in map(read_pace, folders) if r and r.get("method", "lora") == method][:limit]
    n = len(records)
    return combine(records, f"{n} earlier job{'s' if n != 1 else ''} of {base_model}")


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


def pace_in_data_dir(settings: Settings, base_model: str, method: str = "lora") -> Pace | None:
    """`history_pace` of a data folder that may not exist yet (`openft data validate -m MODEL`)."""
    if not settings.database_url and not settings.layout.database.exists():
        return None
    from openft.store.db import make_engine

    engine = make_engine(settings.resolved_database_url())
    try:
        return history_pace(engine, base_model, method)
    except sa.exc.SQLAlchemyError:  # not an openft database (yet): no history
        return None
    finally:
        engine.dispose()
