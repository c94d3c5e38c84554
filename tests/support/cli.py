"""Running the `openft` CLI in-process (typer's CliRunner), as the tests' user would type it.

Knows the CLI's entry point and the migrate command's flags; nothing about servers.
"""

from __future__ import annotations

from typer.testing import CliRunner

from tests.support.servers import ADMIN_KEY

runner = CliRunner()


def invoke(*args: str):
    """`openft ARGS...`; the result's exit_code, stdout and stderr."""
    from openft.cli import app

    return runner.invoke(app, list(args), prog_name="openft")


def migrate(*args: str, source_url: str, key: str = ADMIN_KEY, pre: tuple[str, ...] = (), code: int | None = 0):
    """`openft [pre] migrate from-openai --source-base-url URL --source-api-key KEY ARGS` in-process;
    with `code`, the exit code must be that."""
    result = invoke(*pre, "migrate", "from-openai", "--source-base-url", source_url,
                    "--source-api-key", key, "--max-retries", "0", *args)
    if code is not None:
        assert result.exit_code == code, (args, result.output)
    return result
