"""The CLI without a server: parsing, help, and every failure ending in one `error:` line, exit 1."""

from __future__ import annotations

import httpx
import openai
import pytest
from typer.testing import CliRunner

from openft.cli import app
from openft.cli.common import CliError, State, error_line, parse_key_values
from openft.cli.jobs import build_method, parse_auto
from tests.support.servers import free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("OPENFT_API_KEY", "OPENAI_API_KEY", "OPENFT_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path / "nodata"))


def invoke(*args: str):
    return runner.invoke(app, list(args), prog_name="openft")


def assert_one_line_error(result, *needles: str):
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err, err
    assert "Traceback" not in result.output
    for n in needles:
        assert n in err, (n, err)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("serve", "worker", "files", "jobs", "models", "chat", "keys", "api", "data"):
        assert cmd in result.output
    jobs_help = invoke("jobs", "--help").output
    for cmd in ("create", "list", "get", "cancel", "pause", "resume", "events", "checkpoints", "follow"):
        assert cmd in jobs_help
    legacy = invoke("api", "--help").output
    for cmd in ("fine_tunes.create", "fine_tunes.follow", "fine_tunes.results"):
        assert cmd in legacy


def test_help_text_is_the_docstring():
    from openft.cli.jobs import follow

    assert follow.__doc__.split("(")[0].strip() in " ".join(invoke("jobs", "follow", "--help").output.split())


def test_bare_group_shows_help_without_error():
    result = invoke("files")
    assert result.exit_code == 0
    assert "upload" in result.output


def test_missing_option_is_one_line():
    assert_one_line_error(invoke("jobs", "create"), "--training-file", "openft jobs create --help")


def test_unknown_command_is_one_line():
    assert_one_line_error(invoke("nope"), "No such command")


def test_unknown_option_is_one_line():
    assert_one_line_error(invoke("files", "list", "--bogus"), "--bogus")


def test_server_not_reachable_is_one_line():
    url = dead_url()
    assert_one_line_error(invoke("--base-url", url, "--api-key", "k", "files", "list"), "not reachable", url)


def test_base_url_from_environment(monkeypatch):
    url = dead_url()
    monkeypatch.setenv("OPENFT_BASE_URL", url)
    assert_one_line_error(invoke("--api-key", "k", "models", "list"), url)


def test_no_api_key_is_one_line(tmp_path):
    assert_one_line_error(invoke("--data-dir", str(tmp_path), "files", "list"), "no API key", "admin_key")


def test_api_key_precedence(monkeypatch, tmp_path):
    (tmp_path / "admin_key").write_text("sk-from-file\n")
    assert State(data_dir=tmp_path).resolved_api_key() == "sk-from-file"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert State(data_dir=tmp_path).resolved_api_key() == "sk-openai"
    monkeypatch.setenv("OPENFT_API_KEY", "sk-openft")
    assert State(data_dir=tmp_path).resolved_api_key() == "sk-openft"
    assert State(data_dir=tmp_path, api_key="sk-flag").resolved_api_key() == "sk-flag"


def test_upload_missing_file_is_one_line(tmp_path):
    assert_one_line_error(invoke("--api-key", "k", "files", "upload", str(tmp_path / "missing.jsonl")),
                          "no such file", "missing.jsonl")


@pytest.mark.parametrize("args, needle", [
    (["--n-epochs", "abc"], "--n-epochs must be an integer or 'auto'"),
    (["--n-epochs", "0"], "--n-epochs must be positive"),
    (["--batch-size", "1.5"], "--batch-size must be an integer"),
    (["--learning-rate-multiplier", "fast"], "--learning-rate-multiplier must be a number"),
    (["--metadata", "novalue"], "--metadata expects KEY=VALUE"),
    (["--method", "rl"], "--method must be supervised or dpo"),
])
def test_jobs_create_bad_options(args, needle):
    result = invoke("--base-url", dead_url(), "--api-key", "k", "jobs", "create", "-t", "file-abc", *args)
    assert_one_line_error(result, needle)


def test_jobs_create_local_path_that_does_not_exist():
    result = invoke("--base-url", dead_url(), "--api-key", "k", "jobs", "create", "-t", "nope.jsonl")
    assert_one_line_error(result, "--training-file", "neither a local file nor a file id")


def test_legacy_file_resolution(tmp_path):
    url = dead_url()
    # a folder is refused before any request
    assert_one_line_error(invoke("--base-url", url, "--api-key", "k", "api", "fine_tunes.create", "-t", str(tmp_path)),
                          "-t/--training_file", "is a folder")
    # a missing validation path is refused before the job is created
    result = invoke("--base-url", url, "--api-key", "k", "api", "fine_tunes.create", "-t", "file-abc",
                    "-v", "valid.jsonl", "-m", "openft-tiny")
    assert_one_line_error(result, "-v/--validation_file", "'valid.jsonl'")
    # ids pass through and the request is made (here: to a dead server)
    result = invoke("--base-url", url, "--api-key", "k", "api", "fine_tunes.create", "-t", "file-abc",
                    "--n_epochs", "2", "--batch_size", "4", "--learning_rate_multiplier", "0.5", "--no_follow")
    assert_one_line_error(result, "not reachable")
    # a local file is uploaded first: the upload is what hits the dead server
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    result = invoke("--base-url", url, "--api-key", "k", "api", "fine_tunes.create", "-t", str(data), "--no_follow")
    assert_one_line_error(result, "not reachable")


def test_legacy_bad_hyperparameter():
    result = invoke("--base-url", dead_url(), "--api-key", "k", "api", "fine_tunes.create", "-t", "file-abc",
                    "--n_epochs", "two")
    assert_one_line_error(result, "--n_epochs must be an integer")


def test_build_method_and_parse_auto():
    assert build_method("supervised", 2, "auto", None) == {
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}}}
    assert build_method("dpo", None, None, 0.5, beta=0.1) == {
        "type": "dpo", "dpo": {"hyperparameters": {"learning_rate_multiplier": 0.5, "beta": 0.1}}}
    assert parse_auto("auto", "--x", int) == "auto"
    assert parse_auto("3", "--x", int) == 3
    assert parse_auto(None, "--x", int) is None
    with pytest.raises(CliError):
        parse_auto("-1", "--x", float)


def test_parse_key_values():
    assert parse_key_values(["a=1", "b=x=y"], "--metadata") == {"a": "1", "b": "x=y"}
    assert parse_key_values(None, "--metadata") is None
    with pytest.raises(CliError, match="--metadata expects KEY=VALUE"):
        parse_key_values(["=1"], "--metadata")


def test_api_status_error_line():
    request = httpx.Request("GET", "http://127.0.0.1:1/v1/models/x")
    body = {"error": {"message": "The model 'x' does not exist.", "type": "invalid_request_error",
                      "param": "model", "code": "model_not_found"}}
    response = httpx.Response(404, json=body, request=request)
    err = openai.NotFoundError("Error code: 404", response=response, body=body["error"])
    assert error_line(err) == "error: 404 The model 'x' does not exist. (param: model)"
    err = openai.BadRequestError("Error code: 400", response=httpx.Response(400, request=request),
                                 body={"message": "Invalid n_epochs.", "param": None})
    assert error_line(err) == "error: 400 Invalid n_epochs."


def test_models_export_bad_format_and_output(tmp_path):
    assert_one_line_error(invoke("models", "export", "ft:x", "--format", "onnx", "-o", str(tmp_path / "o")),
                          "--format must be one of peft, merged, gguf")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "f").write_text("x")
    assert_one_line_error(invoke("models", "export", "ft:x", "-o", str(busy)), "not an empty folder")
    assert_one_line_error(invoke("--data-dir", str(tmp_path / "empty"), "models", "export", "ft:x",
                                 "-o", str(tmp_path / "out")), "no openft database")


def test_models_register(tmp_path, tiny_model_dir):
    data_dir = tmp_path / "data"
    assert_one_line_error(invoke("--data-dir", str(data_dir), "models", "register", "mine", str(tmp_path / "nope")),
                          "no such folder")
    assert_one_line_error(invoke("--data-dir", str(data_dir), "models", "register", "mine", str(tmp_path)),
                          "not a Hugging Face model folder")
    result = invoke("--data-dir", str(data_dir), "models", "register", "mine", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert "Registered base model mine" in result.output
    from openft.config import Settings
    from openft.models import get_base_model

    assert get_base_model(Settings(data_dir=data_dir), "mine").location == tiny_model_dir


def test_chat_empty_prompt_is_one_line():
    assert_one_line_error(invoke("--api-key", "k", "chat", "-m", "openft-tiny", "-p", "  "), "--prompt is empty")


def test_serve_rejects_a_file_as_data_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error(invoke("serve", "--data-dir", str(f)), "is not a folder")


def test_python_dash_m_openft_entry_point(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENFT_API_KEY", "OPENAI_API_KEY")}
    ok = subprocess.run([sys.executable, "-m", "openft", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and "serve" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "openft", "--base-url", dead_url(), "--api-key", "k", "jobs", "list"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: the openft server at") and "\n" not in bad.stderr.strip()
    assert bad.stdout == ""


def test_piped_chat_to_a_dead_server_is_one_line():
    result = runner.invoke(app, ["--base-url", dead_url(), "--api-key", "k", "chat", "-m", "x"], input="hi\n",
                           prog_name="openft")
    assert_one_line_error(result, "not reachable")


def test_base_url_forms():
    assert State(base_url="http://h:1").resolved_base_url() == "http://h:1/v1"
    assert State(base_url="http://h:1/").resolved_base_url() == "http://h:1/v1"
    assert State(base_url="http://h:1/v1/").resolved_base_url() == "http://h:1/v1"
    assert State(base_url="https://x.example/openft/v1").resolved_base_url() == "https://x.example/openft/v1"
    assert State().resolved_base_url() == "http://127.0.0.1:8000/v1"
    assert_one_line_error(invoke("--base-url", "localhost:8000", "--api-key", "k", "files", "list"),
                          "--base-url must look like http://HOST:PORT/v1")


def test_settings_from_flags_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFT_PORT", "9123")
    s = State(data_dir=tmp_path / "root").settings(data_dir=None, port=None, host="0.0.0.0")
    assert (s.data_dir, s.port, s.host) == (tmp_path / "root", 9123, "0.0.0.0")
    assert State(data_dir=tmp_path / "root").settings(data_dir=tmp_path / "own").data_dir == tmp_path / "own"


def test_local_command_on_a_broken_database_is_one_line(tmp_path):
    (tmp_path / "openft.db").write_text("not sqlite")
    assert_one_line_error(invoke("--data-dir", str(tmp_path), "keys", "create", "--project", "p"),
                          "database: file is not a database")
