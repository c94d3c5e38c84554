"""What every `openft` command shares: global options, the SDK client, output, one-line errors.

The CLI is a client like any other: client commands talk to the server through the official
`openai` SDK only. Local commands (serve, worker, keys, models register/export) build a
`Settings` from the global `--data-dir` and call the library; the commands that only need the
model cache (`local_settings`) never create a data folder in the current one. This module knows nothing about
HTTP routes, the database schema or training; it only turns failures into one readable line:

    error: 404 The model 'x' does not exist. (param: model)

User mistakes, API errors and an unreachable server end with exit code 1, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from openft.errors import OpenFTError
from openft.names import plain

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def _click(sub: str):
    """The click that typer runs on: `click` itself, or the copy newer typers vendor (typer._click)."""
    base = typer.Context.__mro__[1].__module__.rsplit(".", 1)[0]
    return importlib.import_module(f"{base}.{sub}")


class CliError(Exception):
    """A user mistake found by the CLI itself; printed as `error: <message>`."""


@dataclass
class State:
    """Global options, stored on the root click context (`ctx.obj`)."""

    base_url: str | None = None
    api_key: str | None = None
    data_dir: Path | None = None
    _client: Any = field(default=None, repr=False)

    def settings(self, **overrides):
        """Settings from flags, then OPENFT_* variables, then defaults."""
        from openft.config import Settings

        if overrides.get("data_dir") is None and self.data_dir is not None:  # a command's own flag wins
            overrides["data_dir"] = self.data_dir
        return Settings(**{k: v for k, v in overrides.items() if v is not None})

    def resolved_base_url(self) -> str:
        """--base-url, then OPENFT_BASE_URL, then the default; a bare http://host:port gets /v1."""
        url = (self.base_url or os.environ.get("OPENFT_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if "://" not in url:
            raise CliError(f"--base-url must look like http://HOST:PORT/v1, not {url!r}")
        if url.split("://", 1)[1].count("/") == 0:
            url += "/v1"
        return url

    def resolved_api_key(self, *, openai_env: bool = True) -> str:
        """--api-key, then OPENFT_API_KEY / OPENAI_API_KEY, then `<data_dir>/admin_key`.
        openai_env=False: OPENAI_API_KEY is another server's key (`openft migrate`'s source)."""
        for key in (self.api_key, os.environ.get("OPENFT_API_KEY"), openai_env and os.environ.get("OPENAI_API_KEY")):
            if key:
                return key
        from openft.config import DataLayout

        key_file = DataLayout(Path(self.data_dir or os.environ.get("OPENFT_DATA_DIR") or "./openft-data")).admin_key
        if key_file.is_file():
            key = key_file.read_text().strip()
            if key:
                return key
        raise CliError(f"no API key: pass --api-key, set OPENFT_API_KEY, or point --data-dir at the server's "
                       f"data folder (no {key_file})")

    def client(self):
        """The official OpenAI client, pointed at openft."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.resolved_base_url(), api_key=self.resolved_api_key(),
                                  max_retries=1, timeout=600)
        return self._client


def state() -> State:
    """The State of the running command (created by the root callback)."""
    ctx = _click("globals").get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def client():
    return state().client()


def user_cache_dir() -> Path:
    """openft's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache): `openft/`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openft"


def quiet_progress_bars() -> None:
    """Libraries' progress bars (huggingface_hub, transformers' "Writing model shards", tqdm) stay off
    unless stderr is a terminal: in a pipe or a log they are noise in output that scripts read."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub, hence transformers
    os.environ.setdefault("TQDM_DISABLE", "1")                  # any other tqdm (tqdm's TQDM_* defaults)
    if "huggingface_hub" in sys.modules:
        importlib.import_module("huggingface_hub.utils").disable_progress_bars()
    if "transformers" in sys.modules:
        importlib.import_module("transformers.utils.logging").disable_progress_bar()


def local_settings():
    """Settings of a command that works on this machine without the server (`data validate|inspect
    -m`, `migrate --dry-run`): the configured data folder (--data-dir / OPENFT_DATA_DIR) and model
    cache (OPENFT_MODEL_CACHE_DIR). With neither configured and no ./openft-data here, converted
    models go to the user's cache (user_cache_dir()/models) rather than into a new ./openft-data in
    whatever folder the command runs from. Progress bars stay off unless stderr is a terminal."""
    from openft.config import Settings

    quiet_progress_bars()
    try:
        st = state()
    except RuntimeError:  # used outside the root app (tests, embedding): no global options
        st = State()
    settings = st.settings() if st.data_dir is not None else Settings()
    if ("data_dir" not in settings.model_fields_set and settings.model_cache_dir is None
            and not Path(settings.data_dir).exists()):
        settings = settings.model_copy(update={"model_cache_dir": user_cache_dir() / "models"})
    return settings


def fail(message: str) -> NoReturn:
    raise CliError(message)


# ---------------------------------------------------------------- errors -> one line

def error_line(exc: BaseException, base_url: str | None = None) -> str | None:
    """The one line printed for a known failure, or None for a bug (which keeps its traceback)."""
    import openai

    if isinstance(exc, CliError):
        return f"error: {exc}"
    exceptions = _click("exceptions")
    if isinstance(exc, exceptions.UsageError):
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return f"error: {exc.format_message()}{where}"
    if isinstance(exc, exceptions.ClickException):
        return f"error: {exc.format_message()}"
    if isinstance(exc, OpenFTError):
        return exc.one_line()
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message or str(exc)
        param = body.get("param")
        suffix = f" (param: {param})" if param else ""
        return f"error: {exc.status_code} {message}{suffix}"
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        url = base_url or DEFAULT_BASE_URL
        what = "timed out" if isinstance(exc, openai.APITimeoutError) else "is not reachable"
        return (f"error: the openft server at {url} {what}; start it with `openft serve` "
                f"or point --base-url / OPENFT_BASE_URL at it")
    if isinstance(exc, openai.OpenAIError):
        return f"error: {exc}"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"error: {exc.strerror or exc}: {exc.filename}"
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):  # local commands (keys, export) on a bad database
        cause = getattr(exc, "orig", None) or exc
        return f"error: database: {str(cause).splitlines()[0]}"
    return None


def run_guarded(fn: Callable[[], Any], base_url: Callable[[], str | None]) -> int:
    """Runs a click main with standalone_mode=False and maps failures to exit codes."""
    try:
        rv = fn()
    except typer.Exit as e:  # click returns it in non-standalone mode; kept for other versions
        return e.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - known failures become one line, bugs keep their traceback
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group (`openft files`): its help, not an error
            print(e.format_message() if hasattr(e, "format_message") else e)
            return 0
        line = error_line(e, base_url())
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


class OpenFTGroup(TyperGroup):
    """The root command: runs non-standalone so every failure is printed by `run_guarded`."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        holder: dict[str, State] = {}

        def run():
            extra.setdefault("obj", holder.setdefault("state", State()))
            return super(OpenFTGroup, self).main(args, prog_name, complete_var, standalone_mode=False, **extra)

        def url():
            st = holder.get("state")
            try:
                return st.resolved_base_url() if st else None
            except CliError:
                return st.base_url

        code = run_guarded(run, url)
        if standalone_mode:
            sys.exit(code)
        return code


# ---------------------------------------------------------------- output

def to_dict(obj: Any) -> Any:
    """An SDK object as the API's JSON: field names as the API spells them (`schema`, not the
    pydantic attribute `schema_`)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_unset=False, by_alias=True)
    if isinstance(obj, (list, tuple)):
        return [to_dict(o) for o in obj]
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(to_dict(obj), indent=2, ensure_ascii=False))


def fmt_time(ts: int | float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def print_table(rows: Iterable[Any], columns: list[tuple[str, Callable[[Any], Any]]], *, title: str | None = None) -> None:
    """A rich table of `rows`; each column is (header, getter)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    n = 0
    for row in rows:
        table.add_row(*("-" if (v := get(row)) is None else plain(str(v)) for _, get in columns))
        n += 1
    console = Console()
    if not console.is_terminal:  # piped: never fold ids across lines
        console = Console(width=10_000)
    if n == 0:
        console.print("(none)")
    else:
        console.print(table)


def parse_key_values(items: list[str] | None, option: str) -> dict[str, str] | None:
    """["k=v", ...] -> {"k": "v"}; a malformed item is a one-line error naming the option."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def resolve_file(value: str, *, option: str, purpose: str = "fine-tune", echo: Callable[[str], None] = print) -> str:
    """A local path is uploaded and its new id returned; an existing `file-...` id is returned as is."""
    path = Path(value).expanduser()
    if path.is_file():
        with open(path, "rb") as fh:
            uploaded = client().files.create(file=(path.name, fh), purpose=purpose)
        echo(f"Uploaded file from {value}: {uploaded.id}")
        return uploaded.id
    if path.is_dir():
        fail(f"{option}: {value} is a folder, not a file")
    if value.startswith("file-"):
        return value
    fail(f"{option}: {value!r} is neither a local file nor a file id (file-...)")


def typer_app(help_text: str, **kw) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, **kw)
