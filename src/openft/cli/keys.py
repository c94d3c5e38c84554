"""`openft keys create --project NAME`: a new API key for a project, written to the local database."""

from __future__ import annotations

from pathlib import Path

import typer

from openft.cli.common import fail, state, typer_app

app = typer_app("Manage API keys (local: needs the server's data folder).")


@app.command("create")
def create(project: str = typer.Option(..., "--project", help="Project name; created if new.")):
    """Create an API key for a project (objects are visible only to keys of their project)."""
    if not project.strip():
        fail("--project is empty")
    settings = state().settings()
    from openft.store.auth import create_key, key_secret
    from openft.store.db import make_engine, migrate

    if not settings.database_url:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    try:
        migrate(engine)
        project_id, key = create_key(engine, project.strip(), secret=key_secret(settings))
    finally:
        engine.dispose()
    print(f"Project: {project.strip()} ({project_id})")
    print(f"API key: {key}")
