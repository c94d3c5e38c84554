"""Project-scoped look-ups of the rows several routes read: a job, a file (one that has not
expired). Each raises NotFound in OpenAI's words when the row is missing or another project's, so
no route imports another route for them. Knows the tables; nothing about HTTP beyond the error.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from openft.errors import NotFound
from openft.store.db import files, jobs


def alive_files():
    """Files past their `expires_at` are gone for the API (as OpenAI's expired files are)."""
    return sa.or_(files.c.expires_at.is_(None), files.c.expires_at > int(time.time()))


def get_file_row(conn: sa.Connection, project: str, fid: str):
    row = conn.execute(sa.select(files).where(files.c.id == fid, files.c.project_id == project, alive_files())).first()
    if row is None:
        raise NotFound(f"No such File object: {fid}", param="id")
    return row


def get_job_row(conn: sa.Connection, project: str, jid: str):
    row = conn.execute(sa.select(jobs).where(jobs.c.id == jid, jobs.c.project_id == project)).first()
    if row is None:
        raise NotFound(f"Could not find fine-tune: {jid}", param="fine_tuning_job_id")
    return row
