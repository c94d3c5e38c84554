"""`openft models ...`: list/get/delete through the API; register and export work on local files.

`register` and `export` are local: they need the server's data folder (`--data-dir` or
OPENFT_DATA_DIR), not a running server. `export` resolves the model in the local database for
the project of the current API key, then hands the weights to `openft.serve.export`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from openft.cli.common import client, fail, fmt_time, print_json, print_table, state, typer_app

app = typer_app("List, inspect, delete, register and export models.")

EXPORT_FORMATS = ("peft", "merged", "gguf")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List base and fine-tuned models."""
    rows = list(client().models.list())
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("id", lambda m: m.id), ("owned_by", lambda m: m.owned_by),
                       ("created", lambda m: fmt_time(m.created))])


@app.command("get")
def get(model: str = typer.Argument(..., help="Model id (base, ft:... or ...:ckpt-step-N).")):
    """Show one model."""
    print_json(client().models.retrieve(model))


@app.command("delete")
def delete(model: str = typer.Argument(..., help="A fine-tuned model id (ft:...).")):
    """Delete a fine-tuned model."""
    print_json(client().models.delete(model))


@app.command("register")
def register(name: str = typer.Argument(..., help="The id to register the model under."),
             path: Path = typer.Argument(..., help="A local Hugging Face model folder (with config.json).")):
    """Register a local Hugging Face folder as a base model (writes <data_dir>/models.json)."""
    from openft.models import register_local

    if not path.exists():
        fail(f"no such folder: {path}")
    if not path.is_dir():
        fail(f"{path} is not a folder")
    settings = state().settings()
    m = register_local(settings, name, path)
    print(f"Registered base model {m.id} -> {m.location} (in {settings.layout.models_file})")


def _project_for_current_key(settings, engine) -> str:
    from openft.store.auth import key_secret, project_for_key

    key = state().resolved_api_key()
    project_id = project_for_key(engine, key, key_secret(settings))
    if project_id is None:
        fail(f"the API key is not known to the database in {settings.data_dir}; pass the key of the project "
             "that owns the model (--api-key) or the right --data-dir")
    return project_id


@app.command("export")
def export(model: str = typer.Argument(..., help="The model to export (ft:..., a checkpoint, or a base id)."),
           fmt: str = typer.Option("peft", "--format", "-f", help="peft (adapter), merged (full HF folder) or gguf."),
           output: Path = typer.Option(..., "--output", "-o", help="Folder to write into (created).")):
    """Export a model's weights from the local data folder (no server needed)."""
    if fmt not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"--output {output} exists and is not an empty folder")
    settings = state().settings()
    db_file = settings.layout.database
    if not settings.database_url and not db_file.exists():
        fail(f"no openft database in {settings.data_dir}; pass the server's --data-dir")
    try:
        from openft.serve.export import export_model
    except ImportError as exc:
        fail(f"model export is not available in this installation ({exc})")
    from openft.store.db import make_engine
    from openft.store.resolve import resolve_model

    engine = make_engine(settings.resolved_database_url())
    try:
        project_id = _project_for_current_key(settings, engine)
        with engine.connect() as conn:
            resolved = resolve_model(settings, conn, project_id, model)
    finally:
        engine.dispose()
    result = export_model(settings, resolved.base_model, resolved.adapter_path, resolved.full_model_path, fmt, output)
    print(f"Exported {resolved.id} ({resolved.kind}) as {fmt} to {result or output}")
