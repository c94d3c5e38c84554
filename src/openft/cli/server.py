"""`openft serve` and `openft worker`: start the API (with its embedded worker) or a worker alone.

Builds `Settings` from the flags (then OPENFT_* variables, then defaults) and hands over to
`openft.api.server.run` / `openft.jobs.worker.Worker`; knows nothing about what they do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from openft.cli.common import fail, state


def serve(host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default: 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port to bind (default: 8000)."),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: ./openft-data)."),
          no_worker: bool = typer.Option(False, "--no-worker", help="Do not run a job worker inside the server.")):
    """Serve the OpenAI-compatible API under /v1 (and run a job worker unless --no-worker)."""
    overrides = {"host": host, "port": port, "data_dir": data_dir}
    if no_worker:
        overrides["embedded_worker"] = False
    settings = state().settings(**overrides)
    if Path(settings.data_dir).exists() and not Path(settings.data_dir).is_dir():
        fail(f"--data-dir {settings.data_dir} is not a folder")
    from openft.api.server import run
    from openft.models.aliases import aliases

    aliases(settings)  # a malformed OPENFT_MODEL_ALIASES stops the start, not every later request

    run(settings)


def worker(data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: ./openft-data)."),
           once: bool = typer.Option(False, "--once", help="Run at most one queued job, then exit.")):
    """Run a job worker alone (claims queued jobs from the database and trains them)."""
    settings = state().settings(data_dir=data_dir)
    if Path(settings.data_dir).exists() and not Path(settings.data_dir).is_dir():
        fail(f"--data-dir {settings.data_dir} is not a folder")
    import logging

    from openft.jobs.worker import Worker
    from openft.store.perms import owner_only

    owner_only(settings)  # the runners it starts write job folders and logs: owner-only

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = Worker(settings)
    if once:
        job_id = w.run_once()
        print(f"ran {job_id}" if job_id else "no queued job")
    else:
        w.run_forever()
