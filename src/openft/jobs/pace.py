"""The pace to estimate a job's training time with: earlier jobs' paces, a kept probe, else a table.

`pace_for_job(settings, engine, job, n_examples)`: the paces earlier jobs of the same base model
and method recorded (openft.store.pace.history_pace), else a probe's pace kept for a day beside
the converted models (`<model cache>/pace/`: a property of this machine and that model, shared
by every data folder), else, only when asked (`probe=True`: the data report's "measure pace", the
migration planner), a short probe of the real trainer on the job's own training file
(openft.train.probe, in a child process), else the table for the model's size and this device
(openft.data.estimate.table_pace). Job validation never waits on a probe: the running job's
own steps correct its estimate (`estimated_finish`). Each `Pace` says where it comes from
("2 earlier jobs of openft-tiny", "a 3-step probe", "a table for 135M-parameter models on CPU ...").

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
from openft.data.estimate import Pace, table_pace
from openft.store.blobs import stored_file
from openft.store.pace import history_pace
from openft.train import rules

PROBE_TTL_SECONDS = 86_400   # a probe's pace is reused this long while no job has finished


def _probe_file(settings: Settings, base_model: str, method: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base_model)
    return settings.resolved_model_cache_dir() / "pace" / f"probe-{safe}-{method}.json"


def pace_for_job(settings: Settings, engine: sa.Engine, job, n_examples: int, *, probe: bool = False,
                 table: bool = True) -> Pace | None:
    """The pace to estimate `job` (a jobs row) with: earlier jobs, a kept probe, a new probe (only
    with probe=True), the table (unless table=False); None if none applies."""
    pace = _known_pace(settings, engine, job, n_examples, probe)
    if pace is None and table:
        pace = table_pace_for(settings, job.base_model)
    return pace


def table_pace_for(settings: Settings, base_model: str) -> Pace | None:
    """The table's pace for `base_model` (its parameter count from its files' headers) on this device."""
    try:
        from openft.models import get_base_model
        from openft.models.metadata import base_metadata

        parameters = base_metadata(settings, get_base_model(settings, base_model))["parameters"]
    except Exception:  # noqa: BLE001 - an unknown model has no table pace, not an error
        return None
    return table_pace(parameters, device_kind(settings))


def device_kind(settings: Settings) -> str:
    """"cuda" or "cpu": the setting, or for "auto" whether an NVIDIA driver is loaded (no torch import)."""
    if settings.device != "auto":
        return "cuda" if settings.device.startswith("cuda") else "cpu"
    return "cuda" if Path("/proc/driver/nvidia/version").exists() else "cpu"


def _known_pace(settings: Settings, engine: sa.Engine, job, n_examples: int, probe: bool) -> Pace | None:
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
