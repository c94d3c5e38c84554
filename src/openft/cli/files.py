"""`openft files ...`: the Files API through the openai SDK (upload, list, get, delete, content)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from openft.cli.common import client, fail, fmt_time, print_json, print_table, typer_app

app = typer_app("Upload, list, inspect and delete files (the Files API).")

PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals", "fine-tune-results")


@app.command("upload")
def upload(path: Path = typer.Argument(..., help="Local file to upload (.jsonl for fine-tune)."),
           purpose: str = typer.Option("fine-tune", "--purpose", "-p", help="Purpose of the file."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new file id.")):
    """Upload a local file."""
    if not path.exists():
        fail(f"no such file: {path}")
    if not path.is_file():
        fail(f"{path} is not a file")
    with open(path, "rb") as fh:
        f = client().files.create(file=(path.name, fh), purpose=purpose)
    print(f.id) if quiet else print_json(f)


@app.command("list")
def list_(purpose: Optional[str] = typer.Option(None, "--purpose", "-p", help="Only files with this purpose."),
          limit: int = typer.Option(100, "--limit", "-n", min=1, max=10000, help="How many to show."),
          order: str = typer.Option("desc", "--order", help="asc or desc by creation time."),
          after: Optional[str] = typer.Option(None, "--after", help="Cursor: a file id from a previous page."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List uploaded files, newest first."""
    if order not in ("asc", "desc"):
        fail(f"--order must be asc or desc, not {order!r}")
    kw = {k: v for k, v in (("purpose", purpose), ("after", after)) if v is not None}
    page = client().files.list(limit=limit, order=order, **kw)
    rows = list(page.data)
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("id", lambda f: f.id), ("bytes", lambda f: f.bytes), ("created", lambda f: fmt_time(f.created_at)),
                       ("filename", lambda f: f.filename), ("purpose", lambda f: f.purpose),
                       ("status", lambda f: f.status)])


@app.command("get")
def get(file_id: str = typer.Argument(..., help="file-...")):
    """Show one file's metadata."""
    print_json(client().files.retrieve(file_id))


@app.command("delete")
def delete(file_id: str = typer.Argument(..., help="file-...")):
    """Delete a file."""
    print_json(client().files.delete(file_id))


@app.command("content")
def content(file_id: str = typer.Argument(..., help="file-..."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this path instead of stdout.")):
    """Print (or save) a file's content."""
    data = client().files.content(file_id).content
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        print(f"wrote {len(data)} bytes to {output}", file=sys.stderr)
