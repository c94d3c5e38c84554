"""`openft evals ...` and `openft eval compare|forgetting` against a live server on openft-tiny."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from openft.cli import app
from tests.support.data import write_chat_jsonl

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("cli_env")


def cli(*args, ok=True):
    result = runner.invoke(app, list(args), prog_name="openft")
    if ok:
        assert result.exit_code == 0, (args, result.output)
    return result


def test_evals_commands(tmp_path):
    schema = {"type": "object", "properties": {"input": {"type": "string"}, "label": {"type": "string"}}}
    criteria = [{"type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
                 "reference": "{{item.label}}", "operation": "eq"}]
    ev = json.loads(cli("evals", "create", "--name", "cli", "--item-schema", json.dumps(schema),
                        "--criteria", json.dumps(criteria)).stdout)
    assert ev["object"] == "eval"
    assert ev["id"] in cli("evals", "list").stdout
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"item": {"input": f"say {i}", "label": "x"}}) + "\n" for i in range(5)))
    out = cli("evals", "run", ev["id"], "--data", str(data), "-m", "openft-tiny", "--max-tokens", "2",
              "--temperature", "0").stdout
    run_id = re.search(r"Created run (evalrun_\S+)", out).group(1)
    assert re.search(r"completed\. \d passed, \d failed, 0 errored of 5", out), out
    assert run_id in cli("evals", "runs", ev["id"]).stdout
    res = json.loads(cli("evals", "results", ev["id"], run_id, "--json").stdout)
    assert len(res["output_items"]) == 5 and res["run"]["status"] == "completed"
    assert json.loads(cli("evals", "delete", ev["id"]).stdout)["deleted"] is True
    err = cli("evals", "get", ev["id"], ok=False)
    assert err.exit_code == 1 and err.stderr.startswith("error: ")


def test_compare_models_side_by_side(tmp_path, live_server):
    data = write_chat_jsonl(tmp_path / "cls.jsonl", 8)
    other = f"openft-tiny@{live_server.base_url}"  # the same server reached as "another server"
    out = cli("eval", "compare", str(data), "-m", "openft-tiny", "-m", other, "--api-key-for",
              f"{live_server.base_url}={live_server.api_key}", "--max-tokens", "2", "--json").stdout
    got = json.loads(out)
    assert got["kind"] == "labels" and got["n"] == 8 and got["errors"] == {"openft-tiny": 0, other: 0}
    a, b = got["metrics"]["openft-tiny"], got["metrics"][other]
    assert a["accuracy"] == b["accuracy"] and a["predictions"] == b["predictions"]  # greedy: the same answers
    text = cli("eval", "compare", str(data), "-m", "openft-tiny", "--kind", "text", "--max-tokens", "2",
               "--show-diff").stdout
    assert "rougeL" in text and "task kind: text" in text and "items where the models disagree" in text
    missing = cli("eval", "compare", str(data), "-m", "x@https://example.invalid/v1", ok=False)
    assert missing.exit_code == 1 and "--api-key-for" in missing.stderr


def test_forgetting_reports_per_category():
    got = json.loads(cli("eval", "forgetting", "-m", "openft-tiny", "--base", "openft-tiny", "--per-category", "2",
                         "--json").stdout)
    cats = got["categories"]
    assert set(cats) == {"stem", "humanities", "social_sciences", "other", "all"} and cats["all"]["n"] == 8
    assert all(c["drop"] == 0 for c in cats.values())  # the same greedy model on both sides
    answers = got["answers"]   # the tiny random model answers no letter: every answer is unreadable
    assert answers["base"] == answers["tuned"] and answers["base"]["n"] == 8 and answers["base"]["unreadable"] == 8
    assert answers["base"]["from_logprobs"] + answers["base"]["counted_wrong"] == 8
    table = cli("eval", "forgetting", "-m", "openft-tiny", "--base", "openft-tiny", "--per-category", "1").stdout
    assert re.search(r"openft-tiny: could not read 4 of 4 answers \(no A-D in the text\): \d+ scored from the first "
                     r"token's log-probabilities, \d+ counted wrong", table), table
    bad = cli("eval", "forgetting", "-m", "openft-tiny", ok=False)
    assert bad.exit_code == 1 and "not a fine-tuned model id" in bad.stderr
