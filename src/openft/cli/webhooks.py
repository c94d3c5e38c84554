"""`openft webhooks ...`: webhook endpoints through the openai SDK (add, list, get, delete,
rotate-secret, test) and their deliveries with every attempt (an openft extension)."""

from __future__ import annotations

from typing import Optional

import typer

from openft.cli.common import client, fmt_time, print_json, print_table, typer_app

app = typer_app("Webhook endpoints: openft POSTs signed events there when jobs and eval runs finish.")

EVENT_TYPES = ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
               "eval.run.succeeded", "eval.run.failed", "eval.run.canceled")


@app.command("add")
def add(url: str = typer.Argument(..., help="Where to POST the events (a public http(s) URL)."),
        event: Optional[list[str]] = typer.Option(None, "--event", "-e", help="An event type to send (repeat); "
                                                  "default: all of " + ", ".join(EVENT_TYPES) + "."),
        name: Optional[str] = typer.Option(None, "--name", help="A name for the endpoint (default: the URL)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the signing secret.")):
    """Register an endpoint; prints its signing secret (whsec_...), shown only this once."""
    ep = client().webhooks.create(url=url, event_types=list(event or EVENT_TYPES), name=name or url)
    if quiet:
        print(ep.signing_secret)
        return
    print_json(ep.model_dump() | {"signing_secret": ep.signing_secret})
    print("Keep the signing_secret: it is not shown again. Verify deliveries with "
          "OpenAI().webhooks.unwrap(body, headers, secret=...).", flush=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List this project's endpoints, newest first."""
    rows = list(client().webhooks.list())
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("id", lambda e: e.id), ("url", lambda e: e.url), ("created", lambda e: fmt_time(e.created_at)),
                       ("events", lambda e: ",".join(e.event_types)), ("name", lambda e: e.name)])


@app.command("get")
def get(endpoint_id: str = typer.Argument(..., help="wh_...")):
    """Show one endpoint (the secret only as a hint)."""
    print_json(client().webhooks.retrieve(endpoint_id))


@app.command("delete")
def delete(endpoint_id: str = typer.Argument(..., help="wh_...")):
    """Delete an endpoint; its pending deliveries are dropped."""
    print_json(client().webhooks.delete(endpoint_id))


@app.command("rotate-secret")
def rotate_secret(endpoint_id: str = typer.Argument(..., help="wh_..."),
                  keep_old: bool = typer.Option(False, "--keep-old", help="Keep signing with the old secret "
                                                "too for 24 hours.")):
    """Replace the signing secret; prints the new one."""
    ep = client().webhooks.rotate_secret(endpoint_id, keep_old_secret_active_for_24_hours=keep_old)
    print(ep.signing_secret)


@app.command("test")
def test(endpoint_id: str = typer.Argument(..., help="wh_..."),
         event: str = typer.Option("fine_tuning.job.succeeded", "--event", "-e", help="The event type to send.")):
    """Send one sample event now and print the endpoint's HTTP status."""
    print_json(client().webhooks.test(endpoint_id, event_type=event))


@app.command("deliveries")
def deliveries(endpoint_id: str = typer.Argument(..., help="wh_..."),
               limit: int = typer.Option(20, "--limit", "-n", min=1, max=100, help="How many to show."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON (with every attempt).")):
    """An endpoint's deliveries, newest first: status, attempts, last answer."""
    rows = client().get(f"/webhook_endpoints/{endpoint_id}/deliveries", cast_to=object,
                        options={"params": {"limit": limit}})["data"]
    if as_json:
        print_json(rows)
        return

    def last(d):
        a = d["attempts"][-1] if d["attempts"] else None
        return "" if a is None else (a["error"] or a["status_code"])

    print_table(rows, [("id", lambda d: d["id"]), ("event", lambda d: d["event_type"]),
                       ("object", lambda d: d["event"]["data"]["id"]), ("status", lambda d: d["status"]),
                       ("attempts", lambda d: len(d["attempts"])), ("last", last),
                       ("created", lambda d: fmt_time(d["created_at"]))])
