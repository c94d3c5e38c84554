"""This machine's measured training pace per base model, as recorded by earlier jobs.

`history_pace(engine, base_model, method)`: the paces the trainer recorded (`pace.json` in the
job folder, openft.data.estimate) in the last succeeded jobs of that base model and method;
`pace_in_data_dir(settings, base_model)`: the same for a data folder that may not exist yet.
When there is no history, openft.jobs.pace runs a short probe of the trainer instead.

Knows the jobs table and the job folders; knows nothing about HTTP or how training works, and
never starts a training run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openft.config import Settings
from openft.data.estimate import Pace, combine, read_pace

if TYPE_CHECKING:
    import sqlalchemy as sa

HISTORY_JOBS = 5             # the newest this-many matching jobs


def history_pace(engine: sa.Engine, base_model: str, method: str = "lora", *, limit: int = HISTORY_JOBS
                 ) -> Pace | None:
    """The pace of the newest succeeded jobs of `base_model` trained with `method`, or None."""
    import sqlalchemy as sa  # here: `openft data validate` without a data folder never loads SQLAlchemy

    from openft.store.db import jobs

    with engine.connect() as conn:
        folders = conn.execute(
            sa.select(jobs.c.output_dir).where(jobs.c.base_model == base_model, jobs.c.status == "succeeded",
                                               jobs.c.output_dir.is_not(None))
            .order_by(jobs.c.finished_at.desc(), jobs.c.seq.desc()).limit(limit * 4)).scalars().all()
    records = [r for r in map(read_pace, folders) if r and r.get("method", "lora") == method][:limit]
    n = len(records)
    return combine(records, f"{n} earlier job{'s' if n != 1 else ''} of {base_model}")


def pace_in_data_dir(settings: Settings, base_model: str, method: str = "lora") -> Pace | None:
    """`history_pace` of a data folder that may not exist yet (`openft data validate -m MODEL`)."""
    if not settings.database_url and not settings.layout.database.exists():
        return None
    import sqlalchemy as sa

    from openft.store.db import make_engine

    engine = make_engine(settings.resolved_database_url())
    try:
        return history_pace(engine, base_model, method)
    except sa.exc.SQLAlchemyError:  # not an openft database (yet): no history
        return None
    finally:
        engine.dispose()
