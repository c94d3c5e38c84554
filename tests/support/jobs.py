"""Job rows for the job-system tests: stored files, jobs and their events written straight into
the database (the tests then drive the real validator, queue, worker and runner processes; the
HTTP-level job tests live with the API's).

Knows the store's tables; nothing about HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from openft.ids import file_id, job_id
from openft.store.blobs import BlobStore
from openft.store.db import files, jobs, next_seq
from openft.store.events import add_event

PROJECT = "proj-test"


def store_file(settings, engine, path: Path, *, purpose: str = "fine-tune", filename: str | None = None) -> str:
    sha, size = BlobStore(Path(settings.data_dir) / "blobs").put_bytes(Path(path).read_bytes())
    fid = file_id()
    with engine.begin() as conn:
        conn.execute(files.insert().values(
            id=fid, project_id=PROJECT, filename=filename or Path(path).name, purpose=purpose, bytes=size,
            sha256=sha, created_at=int(time.time()), status="processed", seq=next_seq(conn, files)))
    return fid


def insert_job(engine, training_file: str, *, validation_file: str | None = None, status: str = "queued",
               model: str = "openft-tiny", hyperparameters: dict | None = None, suffix: str | None = "unit",
               seed: int = 7, init_adapter: str | None = None, method_type: str = "supervised",
               created_at: int | None = None) -> str:
    jid = job_id()
    hp = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", **(hyperparameters or {})}
    with engine.begin() as conn:
        conn.execute(jobs.insert().values(
            id=jid, project_id=PROJECT, seq=next_seq(conn, jobs), model=model,
            base_model=model if not model.startswith("ft:") else "openft-tiny", init_adapter=init_adapter,
            status=status, created_at=created_at or int(time.time()),
            method={"type": method_type, method_type: {"hyperparameters": hp}},
            training_file=training_file, validation_file=validation_file, result_files=[], seed=seed,
            suffix=suffix, attempts=0))
        add_event(conn, jid, f"Created fine-tuning job: {jid}")
    return jid


def job_row(engine, jid: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(jobs).where(jobs.c.id == jid)).mappings().one())


def event_messages(engine, jid: str) -> list[str]:
    from openft.store.db import job_events

    with engine.connect() as conn:
        return list(conn.execute(sa.select(job_events.c.message).where(job_events.c.job_id == jid)
                                 .order_by(job_events.c.seq)).scalars())
