"""Database schema, engine and migrations (SQLAlchemy Core; SQLite or PostgreSQL).

Times are integer Unix seconds (what OpenAI's objects carry). JSON columns hold the
OpenAI-shaped sub-objects (hyperparameters, method, metadata, error, metrics).
Schema changes are ordered migrations recorded in `schema_migrations` (see MIGRATIONS).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

projects = sa.Table(
    "projects", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),  # hex digest, see key_hash_kind
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("created_at", sa.Integer, nullable=False),
    # "hmac-sha256" (keyed by the server's secret, openft.store.auth) or "sha256" (rows from before
    # migration 3; upgraded to hmac-sha256 on their first successful use)
    sa.Column("key_hash_kind", sa.String(16), nullable=False, server_default="sha256"),
)

files = sa.Table(
    "files", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("filename", sa.String(1024), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),  # blob key, content-addressed
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Integer, nullable=True),
    sa.Column("status", sa.String(32), nullable=False, default="processed"),
    sa.Column("status_details", sa.Text, nullable=True),
    sa.Column("seq", sa.Integer, nullable=False),  # insertion order for cursor pagination
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("model", sa.String(512), nullable=False),          # as requested (base id or ft:...)
    sa.Column("base_model", sa.String(256), nullable=False),     # registry id of the base weights
    sa.Column("init_adapter", sa.String(1024), nullable=True),   # adapter path when model is ft:...
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Integer, nullable=True),
    sa.Column("finished_at", sa.Integer, nullable=True),
    sa.Column("estimated_finish", sa.Integer, nullable=True),
    sa.Column("fine_tuned_model", sa.String(512), nullable=True),
    sa.Column("method", sa.JSON, nullable=False),                # {"type": ..., "<type>": {"hyperparameters": {...}}}
    sa.Column("training_file", sa.String(64), nullable=False),
    sa.Column("validation_file", sa.String(64), nullable=True),
    sa.Column("result_files", sa.JSON, nullable=False),
    sa.Column("trained_tokens", sa.BigInteger, nullable=True),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("suffix", sa.String(64), nullable=True),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("integrations", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),                  # {"code", "message", "param"}
    sa.Column("requested_action", sa.String(16), nullable=True),  # "cancel" | "pause" while running
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("resume_checkpoint", sa.String(1024), nullable=True),  # path to continue from
    sa.Column("output_dir", sa.String(1024), nullable=True),
    # added by migration 2: how often this job's worker was lost (lease expired) and its runner
    # was retried after dying of an infrastructure fault (killed, not out of memory)
    sa.Column("workers_lost", sa.Integer, nullable=False, server_default="0", default=0),
    sa.Column("runner_retries", sa.Integer, nullable=False, server_default="0", default=0),
)

job_events = sa.Table(
    "job_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),            # info | warn | error
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),             # message | metrics
    sa.Column("data", sa.JSON, nullable=True),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("step_number", sa.Integer, nullable=False),
    sa.Column("fine_tuned_model_checkpoint", sa.String(512), nullable=False, unique=True),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),           # adapter (or full model) folder
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

# Fine-tuned models (and their checkpoints are served through `checkpoints`). Base models
# come from the registry in openft.models, not from this table.
models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.String(512), primary_key=True),            # ft:<base>:<org>:<suffix>:<jobid>
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("owned_by", sa.String(200), nullable=False),
    sa.Column("base_model", sa.String(256), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("method", sa.String(16), nullable=False, default="lora"),  # lora | full
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

# Evals (migration 4): OpenAI's eval, eval.run and eval.run.output_item. JSON columns hold the
# request's sub-objects as given (data_source_config, testing_criteria, data_source).
evals = sa.Table(
    "evals", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("data_source_config", sa.JSON, nullable=False),  # the response shape (schema built)
    sa.Column("testing_criteria", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

eval_runs = sa.Table(
    "eval_runs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("eval_id", sa.String(64), nullable=False, index=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("model", sa.String(512), nullable=True),
    sa.Column("status", sa.String(32), nullable=False, index=True),  # queued|in_progress|completed|failed|canceled
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("data_source", sa.JSON, nullable=False),
    sa.Column("items", sa.JSON, nullable=False),                 # [{"item": {...}, "sample": {...}|None}]
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),                  # {"code", "message"}
    sa.Column("usage", sa.JSON, nullable=True),                  # {model: {prompt_tokens, completion_tokens, invocation_count}}
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Integer, nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

eval_output_items = sa.Table(
    "eval_output_items", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("eval_id", sa.String(64), nullable=False),
    sa.Column("datasource_item_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),          # pass | fail | error
    sa.Column("datasource_item", sa.JSON, nullable=False),
    sa.Column("results", sa.JSON, nullable=False),
    sa.Column("sample", sa.JSON, nullable=True),
    sa.UniqueConstraint("run_id", "datasource_item_id", name="uq_eval_output_item"),
)

# Stored responses (migration 5): the Responses API's `response` objects as returned (`body`) and
# the conversation that went into each (`input_items`: the previous response's input items and
# output, then this request's input, as Responses items with ids), so that `previous_response_id`
# continues from one row without walking the chain.
responses = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("model", sa.String(512), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),          # completed | incomplete | failed
    sa.Column("previous_response_id", sa.String(64), nullable=True),
    sa.Column("input_items", sa.JSON, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

# Webhooks (migration 6): endpoints a project registered, one delivery per (event, endpoint), and
# every attempt to deliver it. `payload` is the exact JSON body that is signed and sent.
webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("event_types", sa.JSON, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),              # whsec_<base64>: signs deliveries
    sa.Column("previous_secret", sa.String(128), nullable=True),      # kept after a rotation ...
    sa.Column("previous_secret_until", sa.Integer, nullable=True),    # ... until this time
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("endpoint_id", sa.String(64), nullable=False, index=True),
    sa.Column("project_id", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),             # evt_...: the webhook-id header
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),   # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float, nullable=True),            # also the lease of a claimed delivery
    sa.Column("finished_at", sa.Integer, nullable=True),
)

webhook_attempts = sa.Table(
    "webhook_attempts", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(64), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),              # None: no HTTP answer
    sa.Column("error", sa.Text, nullable=True),
)

# Model exports (migration 7): one row per export, run by the worker under a lease (worker_id,
# heartbeat_at) like a job; its result lives in <data_dir>/exports/<id>/<filename>.
exports = sa.Table(
    "exports", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("model", sa.String(512), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),               # merged | gguf | peft
    sa.Column("quantization", sa.String(16), nullable=True),          # f16 | q8_0 (gguf only)
    sa.Column("status", sa.String(16), nullable=False, index=True),   # queued | running | succeeded | failed
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.Integer, nullable=True),
    sa.Column("bytes", sa.BigInteger, nullable=True),
    sa.Column("filename", sa.String(1024), nullable=True),
    sa.Column("error", sa.JSON, nullable=True),                       # {"code", "message"}
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
)

schema_migrations = sa.Table(
    "schema_migrations", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Integer, nullable=False),
)


def _m1_initial(conn: sa.Connection) -> None:
    metadata.create_all(conn)


def _add_column(conn: sa.Connection, table: str, name: str, ddl: str) -> None:
    """ALTER TABLE ADD COLUMN unless the table has it already (a database made by migration 1 of a
    later version creates every column of the current table definitions)."""
    if name not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}"))


def _m2_job_fault_counters(conn: sa.Connection) -> None:
    """jobs.workers_lost and jobs.runner_retries (a database made by migration 1 of this code
    already has them); workers_lost starts from the events that used to be its only record."""
    for name in ("workers_lost", "runner_retries"):
        _add_column(conn, "jobs", name, "INTEGER NOT NULL DEFAULT 0")
    conn.execute(sa.text(
        "UPDATE jobs SET workers_lost = (SELECT count(*) FROM job_events WHERE job_events.job_id = jobs.id "
        "AND job_events.message LIKE 'The worker running this job stopped responding%') "
        "WHERE status IN ('queued', 'running')"))


def _m3_key_hash_kind(conn: sa.Connection) -> None:
    """api_keys.key_hash_kind: which hash key_sha256 holds (databases made by migration 1 of a
    version that had this column in the table already have it)."""
    _add_column(conn, "api_keys", "key_hash_kind", "VARCHAR(16) NOT NULL DEFAULT 'sha256'")


def _m4_evals(conn: sa.Connection) -> None:
    """The Evals API's tables (a database made by migration 1 of this code already has them)."""
    for table in (evals, eval_runs, eval_output_items):
        table.create(conn, checkfirst=True)


def _m5_responses(conn: sa.Connection) -> None:
    """The Responses API's stored responses (a database made by migration 1 of this code already has it)."""
    responses.create(conn, checkfirst=True)


def _m6_webhooks(conn: sa.Connection) -> None:
    """The webhook tables (a database made by migration 1 of this code already has them)."""
    for table in (webhook_endpoints, webhook_deliveries, webhook_attempts):
        table.create(conn, checkfirst=True)


def _m7_exports(conn: sa.Connection) -> None:
    """The exports table (a database made by migration 1 of this code already has it). Exports that
    older versions kept as `<data_dir>/exports/<id>/export.json` are imported at start-up by
    openft.jobs.exports.import_files: this migration does not know the data folder."""
    exports.create(conn, checkfirst=True)


# Ordered; append only. Each runs once, in a transaction, and is recorded.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial schema", _m1_initial),
    (2, "job fault counters", _m2_job_fault_counters),
    (3, "api key hash kind (HMAC with the server's secret)", _m3_key_hash_kind),
    (4, "evals, eval runs and their output items", _m4_evals),
    (5, "stored responses (Responses API)", _m5_responses),
    (6, "webhook endpoints, deliveries and attempts", _m6_webhooks),
    (7, "model exports as rows (run by the worker under a lease)", _m7_exports),
]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the one writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    return engine


def migrate(engine: Engine) -> list[int]:
    """Apply pending migrations; returns the versions applied."""
    applied: list[int] = []
    with engine.begin() as conn:
        schema_migrations.create(conn, checkfirst=True)
        done = {r[0] for r in conn.execute(sa.select(schema_migrations.c.version))}
    for version, name, fn in MIGRATIONS:
        if version in done:
            continue
        with engine.begin() as conn:
            fn(conn)
            conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=int(time.time())))
        applied.append(version)
    return applied


def next_seq(conn: sa.Connection, table: sa.Table) -> int:
    """Monotonic per-table order key for cursor pagination (called inside the insert's transaction)."""
    cur = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar()
    return (cur or 0) + 1
