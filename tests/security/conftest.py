"""Security test fixtures: one real server process (`python -m openft.api.server`, no embedded
worker, so jobs stay where the API leaves them) and two projects' keys, driven by the official
`openai` SDK and raw HTTP. Project A owns files, jobs, a fine-tuned model and a checkpoint;
project B tries to reach them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import API, ServerSpec, running

SEC_ENV = {"OPENFT_MAX_UPLOAD_BYTES": "200000"}


@pytest.fixture(scope="package")
def sec_server(tmp_path_factory, model_cache):
    with running(ServerSpec(API, worker=False, env=SEC_ENV).server(tmp_path_factory.mktemp("sec") / "data",
                                                                   model_cache)) as server:
        yield server


@dataclass
class Owned:
    """What project A owns: ids project B must not reach."""
    file_id: str
    job_id: str
    model_id: str
    checkpoint_id: str
    event_id: str


@pytest.fixture(scope="package")
def two_projects(sec_server):
    """(client of A, client of B, Owned). A's fine-tuned model and checkpoint are rows in A's
    project, as a finished job leaves them (training one would take minutes); their folders are
    never read, since B must be refused before anything is loaded."""
    import sqlalchemy as sa

    from openft.store.db import checkpoints, job_events, jobs, models

    a = sec_server.client(sec_server.new_key("project-a")[1])
    b = sec_server.client(sec_server.new_key("project-b")[1])
    f = upload(a, chat_jsonl())
    job = a.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id)
    model_id = f"ft:openft-tiny:openft:sec:{job.id[-8:]}"
    ckpt_id = f"{model_id}:ckpt-step-1"
    db = sec_server.db()
    try:
        with db.begin() as conn:
            project = conn.execute(sa.select(jobs.c.project_id).where(jobs.c.id == job.id)).scalar()
            folder = str(sec_server.data_dir / "jobs" / job.id / "model")
            conn.execute(models.insert().values(id=model_id, project_id=project, created_at=int(time.time()),
                                                owned_by="project-a", base_model="openft-tiny", job_id=job.id,
                                                method="lora", path=folder, deleted=False))
            conn.execute(checkpoints.insert().values(
                id="ftckpt_sec1", job_id=job.id, project_id=project, created_at=int(time.time()), step_number=1,
                fine_tuned_model_checkpoint=ckpt_id, metrics={"step": 1}, path=folder + "-ckpt", deleted=False))
            event_id = conn.execute(sa.select(job_events.c.id).where(job_events.c.job_id == job.id)).scalar()
    finally:
        db.dispose()
    return a, b, Owned(f.id, job.id, model_id, ckpt_id, event_id)
