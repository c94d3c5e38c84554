"""`openft webhooks add|list|test|deliveries|delete` against a live server that may deliver to a
local receiver; a refused target ends in one `error:` line."""

from __future__ import annotations

import json

import openai
from typer.testing import CliRunner

from openft.cli import app
from tests.support.data import write_chat_jsonl
from tests.support.wait import wait_until

runner = CliRunner()


def cli(server, *args: str, ok: bool = True):
    result = runner.invoke(app, ["--api-key", server.api_key, "--base-url", server.base_url, *args],
                           prog_name="openft")
    if ok:
        assert result.exit_code == 0, (args, result.output)
    return result


def test_add_test_list_deliveries_delete(hook_server, receiver, tmp_path):
    secret = cli(hook_server, "webhooks", "add", receiver.url, "-e", "fine_tuning.job.succeeded",
                 "-e", "fine_tuning.job.cancelled", "-q").stdout.strip()
    assert secret.startswith("whsec_")
    listed = json.loads(cli(hook_server, "webhooks", "list", "--json").stdout)
    [ep] = [e for e in listed if e["url"] == receiver.url]
    assert ep["event_types"] == ["fine_tuning.job.succeeded", "fine_tuning.job.cancelled"]
    assert "signing_secret" not in ep

    out = json.loads(cli(hook_server, "webhooks", "test", ep["id"]).stdout)
    assert (out["status_code"], out["event_type"]) == (200, "fine_tuning.job.succeeded")
    headers, body = receiver.wait(1)[0]
    event = openai.OpenAI(api_key="x", base_url=hook_server.base_url).webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded"

    api = hook_server.client()
    train = api.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl").open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.cancel(api.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id).id)
    receiver.wait(2)

    def delivered():  # the delivery is marked delivered just after the receiver answered
        [d] = json.loads(cli(hook_server, "webhooks", "deliveries", ep["id"], "--json").stdout)
        return d if d["status"] == "delivered" else None

    d = wait_until(delivered, 10, what="the delivery to be marked delivered")
    assert (d["event"]["data"]["id"], d["status"], d["attempts"][0]["status_code"]) == (job.id, "delivered", 200)
    table = cli(hook_server, "webhooks", "deliveries", ep["id"]).stdout
    assert job.id in table and "fine_tuning.job.cancelled" in table
    cli(hook_server, "webhooks", "delete", ep["id"])
    assert ep["id"] not in cli(hook_server, "webhooks", "list").stdout


def test_a_refused_target_is_one_error_line(strict_server):
    result = cli(strict_server, "webhooks", "add", "http://127.0.0.1:9/hook", ok=False)
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "(param: url)" in err and "Traceback" not in result.output
