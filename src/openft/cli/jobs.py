"""`openft jobs ...`: the fine-tuning jobs API through the openai SDK, and `follow`."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from openft.cli.common import client, fail, fmt_time, parse_key_values, print_json, print_table, resolve_file, typer_app
from openft.cli.follow import follow_job, format_event
from openft.vocab import DPO, METHOD_HYPERPARAMETERS, SUPERVISED, SUPPORTED_METHODS

app = typer_app("Create, inspect and control fine-tuning jobs.")


def parse_auto(value: Optional[str], option: str, kind: type):
    """'auto' stays 'auto'; otherwise the value must parse as `kind` and be positive."""
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        parsed = kind(value)
    except ValueError:
        fail(f"{option} must be {'an integer' if kind is int else 'a number'} or 'auto', not {value!r}")
    if parsed <= 0:
        fail(f"{option} must be positive, not {value!r}")
    return parsed


def build_method(method: str, n_epochs, batch_size, lr_multiplier, beta=None) -> dict:
    """The `method` request field from CLI options (only the given hyperparameters)."""
    if method not in SUPPORTED_METHODS:
        fail(f"--method must be {' or '.join(SUPPORTED_METHODS)}, not {method!r}")
    given = dict(zip(METHOD_HYPERPARAMETERS[DPO], (n_epochs, batch_size, lr_multiplier, beta)))  # OpenAI's three, beta
    hp = {k: v for k, v in given.items() if v is not None}
    return {"type": method, method: {"hyperparameters": hp}}


def finish_follow(job_id: str, interval: float) -> None:
    """Follows a job to its end; exits 1 unless it succeeded (or paused)."""
    try:
        state = follow_job(client(), job_id, interval=interval)
    except KeyboardInterrupt:
        print(f"\nStopped following; the job goes on. Again: openft jobs follow {job_id}", file=sys.stderr)
        raise typer.Exit(130) from None
    print(state.summary())
    if state.status in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command("create")
def create(
    training_file: str = typer.Option(..., "--training-file", "-t", help="A file id, or a local .jsonl to upload."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Base model id or ft:... model."),
    validation_file: Optional[str] = typer.Option(None, "--validation-file", "-v", help="A file id or a local .jsonl."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Up to 64 characters added to the model name."),
    n_epochs: Optional[str] = typer.Option(None, "--n-epochs", help="Epochs (int) or 'auto'."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Batch size (int) or 'auto'."),
    learning_rate_multiplier: Optional[str] = typer.Option(None, "--learning-rate-multiplier", "--lr",
                                                           help="Learning rate multiplier (float) or 'auto'."),
    method: str = typer.Option(SUPERVISED, "--method", help=" or ".join(SUPPORTED_METHODS) + "."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible runs."),
    metadata: Optional[list[str]] = typer.Option(None, "--metadata", help="KEY=VALUE, repeatable."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Follow the job until it ends."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between polls when following."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new job id."),
):
    """Create a fine-tuning job (local files are uploaded first)."""
    meta = parse_key_values(metadata, "--metadata")
    m = build_method(method, parse_auto(n_epochs, "--n-epochs", int), parse_auto(batch_size, "--batch-size", int),
                     parse_auto(learning_rate_multiplier, "--learning-rate-multiplier", float))
    def note(line: str) -> None:  # stdout stays parseable JSON
        print(line, file=sys.stderr, flush=True)

    train_id = resolve_file(training_file, option="--training-file", echo=note)
    valid_id = resolve_file(validation_file, option="--validation-file", echo=note) if validation_file else None
    kw = {k: v for k, v in (("validation_file", valid_id), ("suffix", suffix), ("seed", seed),
                            ("metadata", meta)) if v is not None}
    job = client().fine_tuning.jobs.create(training_file=train_id, model=model, method=m, **kw)
    if not follow:
        print(job.id) if quiet else print_json(job)
        return
    print(f"Created fine-tuning job: {job.id}")
    finish_follow(job.id, interval)


@app.command("list")
def list_(limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many to show."),
          after: Optional[str] = typer.Option(None, "--after", help="Cursor: a job id from a previous page."),
          metadata: Optional[list[str]] = typer.Option(None, "--metadata", help="Only jobs with KEY=VALUE."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List fine-tuning jobs, newest first."""
    meta = parse_key_values(metadata, "--metadata")
    kw = {k: v for k, v in (("after", after), ("metadata", meta)) if v is not None}
    rows = list(client().fine_tuning.jobs.list(limit=limit, **kw).data)
    if as_json:
        print_json(rows)
        return
    print_table(rows, [("id", lambda j: j.id), ("status", lambda j: j.status), ("model", lambda j: j.model),
                       ("created", lambda j: fmt_time(j.created_at)), ("fine_tuned_model", lambda j: j.fine_tuned_model)])


@app.command("get")
def get(job_id: str = typer.Argument(..., help="ftjob-...")):
    """Show one job."""
    print_json(client().fine_tuning.jobs.retrieve(job_id))


@app.command("cancel")
def cancel(job_id: str = typer.Argument(..., help="ftjob-...")):
    """Cancel a job."""
    print_json(client().fine_tuning.jobs.cancel(job_id))


@app.command("pause")
def pause(job_id: str = typer.Argument(..., help="ftjob-...")):
    """Pause a job (it stops at a checkpoint)."""
    print_json(client().fine_tuning.jobs.pause(job_id))


@app.command("resume")
def resume(job_id: str = typer.Argument(..., help="ftjob-...")):
    """Resume a paused job from its checkpoint."""
    print_json(client().fine_tuning.jobs.resume(job_id))


@app.command("events")
def events(job_id: str = typer.Argument(..., help="ftjob-..."),
           limit: int = typer.Option(100, "--limit", "-n", min=1, max=10000, help="How many (newest)."),
           after: Optional[str] = typer.Option(None, "--after", help="Cursor: an event id from a previous page."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON (newest first, as the API lists).")):
    """Show a job's events, oldest first."""
    kw = {"after": after} if after else {}
    rows = list(client().fine_tuning.jobs.list_events(job_id, limit=limit, **kw).data)
    if as_json:
        print_json(rows)
        return
    for e in reversed(rows):
        print(format_event(e))


@app.command("checkpoints")
def checkpoints(job_id: str = typer.Argument(..., help="ftjob-..."),
                limit: int = typer.Option(10, "--limit", "-n", min=1, max=1000, help="How many."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List a job's checkpoints (each usable as a model)."""
    rows = list(client().fine_tuning.jobs.checkpoints.list(job_id, limit=limit).data)
    if as_json:
        print_json(rows)
        return

    def metric(name):
        return lambda c: (None if getattr(c.metrics, name, None) is None else f"{getattr(c.metrics, name):.4f}")

    print_table(rows, [("step", lambda c: c.step_number), ("model", lambda c: c.fine_tuned_model_checkpoint),
                       ("train_loss", metric("train_loss")), ("valid_loss", metric("valid_loss")),
                       ("created", lambda c: fmt_time(c.created_at))])


@app.command("follow")
def follow(job_id: str = typer.Argument(..., help="ftjob-..."),
           interval: float = typer.Option(1.0, "--interval", help="Seconds between polls.")):
    """Follow a job live (events, step, loss, ETA) until it ends; exit 1 if it fails."""
    finish_follow(job_id, interval)
