"""The `openft` command line: thin wrappers that parse, call the library or the API, and print.

    openft serve | worker                     local: run the server / a worker
    openft files | jobs | models | chat       the API, through the official openai SDK
    openft keys | models register | export    local: the data folder's database and files
    openft data ...                           the data toolkit (openft.cli.data)
    openft api fine_tunes.*                   the old `openai api` commands
    openft evals ... | eval compare|forgetting the Evals API; models side by side (openft.cli.eval)
    openft webhooks add|list|delete|...       webhook endpoints and their deliveries

Global options (before the command) say where the server is and which key to use. Help texts
are the docstrings. Failures end in one line `error: ...` and exit code 1 (see common.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from openft.cli import chat as _chat
from openft.cli import eval as _eval
from openft.cli import files as _files
from openft.cli import jobs as _jobs
from openft.cli import keys as _keys
from openft.cli import legacy as _legacy
from openft.cli import migrate as _migrate
from openft.cli import models as _models
from openft.cli import server as _server
from openft.cli import webhooks as _webhooks
from openft.cli.common import OpenFTGroup, fail, state

app = typer.Typer(cls=OpenFTGroup, no_args_is_help=True, add_completion=False,
                  help="openft: fine-tune and serve open-weight models behind the OpenAI API.",
                  pretty_exceptions_show_locals=False)


@app.callback()
def _root(base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENFT_BASE_URL", show_envvar=True,
                                                 help="The server's API root (default: http://127.0.0.1:8000/v1)."),
          api_key: Optional[str] = typer.Option(None, "--api-key", help="API key (env OPENFT_API_KEY or "
                                                "OPENAI_API_KEY; else <data-dir>/admin_key).", show_default=False),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="OPENFT_DATA_DIR", show_envvar=True,
                                                  help="The server's data folder (default: ./openft-data).")):
    """openft: fine-tune and serve open-weight models behind the OpenAI API."""
    st = state()
    st.base_url, st.api_key, st.data_dir = base_url, api_key, data_dir


app.command("serve")(_server.serve)
app.command("worker")(_server.worker)
app.add_typer(_files.app, name="files")
app.add_typer(_jobs.app, name="jobs")
app.add_typer(_models.app, name="models")
app.command("chat")(_chat.chat)
app.add_typer(_keys.app, name="keys")
app.add_typer(_legacy.app, name="api")
app.add_typer(_migrate.app, name="migrate")
app.add_typer(_eval.evals_app, name="evals")
app.add_typer(_eval.eval_app, name="eval")
app.add_typer(_webhooks.app, name="webhooks")


def _mount_data(app: typer.Typer) -> None:
    """`openft data` comes from openft.cli.data; if that module cannot load, say so in one line."""
    try:
        from openft.cli.data import data_app
    except Exception as exc:  # noqa: BLE001 - a broken optional module must not break the CLI
        reason = f"{type(exc).__name__}: {exc}"

        @app.command("data", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                     add_help_option=False)
        def data_unavailable(ctx: typer.Context):
            """Data toolkit (unavailable: its module failed to load)."""
            fail(f"`openft data` is unavailable: {reason}")
        return
    app.add_typer(data_app, name="data")


_mount_data(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `openft` script and `python -m openft`."""
    app(args=argv, prog_name="openft")


__all__ = ["app", "main"]
