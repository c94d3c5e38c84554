"""`openft api fine_tunes.*`: the old `openai api fine_tunes.*` commands people still have in notes.

They map onto today's fine-tuning jobs API: `-t/-v` take a local file (uploaded first) or a
file id; `create` follows the job unless `--no_follow`; `results` prints the legacy results file
(openft.train.metrics.LEGACY_CSV_FIELDS, from the job's per-step metrics, plus the classification/*
columns of its results CSV);
the old classification flags (`--compute_classification_metrics`, ...) become openft's
hyperparameters of the same names.
"""

from __future__ import annotations

import csv
import io
import sys
from typing import Optional

import typer

from openft.cli.common import client, fail, resolve_file, typer_app
from openft.cli.follow import follow_job
from openft.cli.jobs import build_method, parse_auto
from openft.train import metrics as M
from openft.train.metrics import CLASSIFICATION_PREFIX
from openft.vocab import SUPERVISED

app = typer_app("Legacy commands of the old `openai api` CLI (fine_tunes.*).")

STREAM_NOTE = "Streaming events until fine-tuning is complete...\n(Ctrl-C will interrupt the stream, but not cancel the job)"


def _follow(job_id: str) -> None:
    print(STREAM_NOTE, flush=True)
    try:
        state = follow_job(client(), job_id, interval=1.0)
    except KeyboardInterrupt:
        print(f"\nStream interrupted (job still running). Resume it with:\n\n  openft api fine_tunes.follow -i {job_id}",
              file=sys.stderr)
        raise typer.Exit(1) from None
    print(state.summary())
    if state.status == "succeeded":
        print(f"\nTry out your fine-tuned model:\n\n  openft chat -m {state.fine_tuned_model} -p \"Hello\"")
    elif state.status in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command("fine_tunes.create")
def fine_tunes_create(
    training_file: str = typer.Option(..., "-t", "--training_file", help="Local JSONL path or file id."),
    validation_file: Optional[str] = typer.Option(None, "-v", "--validation_file", help="Local JSONL path or file id."),
    model: str = typer.Option("smollm2-135m-instruct", "-m", "--model", help="Base model or ft:... model."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Added to the fine-tuned model's name."),
    n_epochs: Optional[str] = typer.Option(None, "--n_epochs", "--n-epochs", help="Epochs (int) or 'auto'."),
    batch_size: Optional[str] = typer.Option(None, "--batch_size", "--batch-size", help="Batch size or 'auto'."),
    learning_rate_multiplier: Optional[str] = typer.Option(None, "--learning_rate_multiplier",
                                                           "--learning-rate-multiplier", help="LR multiplier or 'auto'."),
    no_follow: bool = typer.Option(False, "--no_follow", "--no-follow", help="Return after creating the job."),
    compute_classification_metrics: bool = typer.Option(
        False, "--compute_classification_metrics", help="Each epoch end, classification/* columns (accuracy, "
        "precision, recall, auroc, auprc, f1.0) in the results file, computed on the whole validation file."),
    classification_n_classes: Optional[int] = typer.Option(
        None, "--classification_n_classes", help="Number of labels (checked against the validation file)."),
    classification_positive_class: Optional[str] = typer.Option(
        None, "--classification_positive_class", help="Binary tasks: the positive label."),
    classification_betas: Optional[str] = typer.Option(
        None, "--classification_betas", help="Comma-separated betas: classification/f<beta> columns, e.g. 0.5,2."),
    prompt_loss_weight: Optional[float] = typer.Option(
        None, "--prompt_loss_weight", help="Accepted for old scripts. openft trains on completion tokens only "
        "(a prompt loss weight of 0); another value is reported and not applied."),
):
    """Create a fine-tuning job (old syntax); local files are uploaded first, then the job is followed."""
    method = build_method(SUPERVISED, parse_auto(n_epochs, "--n_epochs", int),
                          parse_auto(batch_size, "--batch_size", int),
                          parse_auto(learning_rate_multiplier, "--learning_rate_multiplier", float))
    hp = method[SUPERVISED]["hyperparameters"]
    if compute_classification_metrics:
        hp["compute_classification_metrics"] = True
    for key, value in (("classification_n_classes", classification_n_classes),
                       ("classification_positive_class", classification_positive_class)):
        if value is not None:
            hp[key] = value
    if classification_betas:
        try:
            hp["classification_betas"] = [float(b) for b in classification_betas.split(",") if b.strip()]
        except ValueError:
            fail(f"--classification_betas must be comma-separated numbers, not {classification_betas!r}")
    if prompt_loss_weight not in (None, 0, 0.0):
        print(f"note: --prompt_loss_weight {prompt_loss_weight} is not applied: openft trains on completion tokens "
              "only (weight 0).", file=sys.stderr)
    train_id = resolve_file(training_file, option="-t/--training_file")
    valid_id = resolve_file(validation_file, option="-v/--validation_file") if validation_file else None
    kw = {k: v for k, v in (("validation_file", valid_id), ("suffix", suffix)) if v is not None}
    job = client().fine_tuning.jobs.create(training_file=train_id, model=model, method=method, **kw)
    print(f"Created fine-tune: {job.id}", flush=True)
    if no_follow:
        return
    _follow(job.id)


@app.command("fine_tunes.follow")
def fine_tunes_follow(job_id: str = typer.Option(..., "-i", "--id", help="ftjob-...")):
    """Follow a fine-tuning job's events until it ends (old syntax)."""
    _follow(job_id)


@app.command("fine_tunes.results")
def fine_tunes_results(job_id: str = typer.Option(..., "-i", "--id", help="ftjob-...")):
    """Print a job's results in the legacy results file's columns: step, elapsed_tokens,
    elapsed_examples, training_loss, training_sequence_accuracy, training_token_accuracy,
    validation_loss, validation_sequence_accuracy, validation_token_accuracy, then the
    classification/* columns when the job computed classification metrics."""
    c = client()
    job = c.fine_tuning.jobs.retrieve(job_id)
    points = _metrics(c, job_id)
    if not points:
        fail(f"job {job_id} has no results yet (status: {job.status})")
    extra: dict[int, dict] = {}
    if job.result_files:  # the classification/* columns are in the results file (once per epoch)
        text = c.files.content(job.result_files[0]).text
        extra = {int(r["step"]): {k: v for k, v in r.items() if k.startswith(CLASSIFICATION_PREFIX)}
                 for r in csv.DictReader(io.StringIO(text)) if (r.get("step") or "").isdigit()}
    fields, rows = legacy_rows(points, extra)
    out = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    sys.stdout.flush()


def _metrics(c, job_id: str) -> list[dict]:
    """The job's metrics, one dict per step in step order (GET /fine_tuning/jobs/{id}/metrics, every
    page; a step written again by a resumed job keeps its latest values)."""
    by_step: dict[int, dict] = {}
    after = None
    while True:
        page = c.get(f"/fine_tuning/jobs/{job_id}/metrics", cast_to=object,
                     options={"params": {"after": after} if after else {}})
        steps = page["steps"]
        series = {k: v for k, v in page.items() if k not in ("steps", "charts") and isinstance(v, list)}
        for i, step in enumerate(steps):
            by_step[step] = {"step": step, **{k: v[i] for k, v in series.items()}}
        if not page.get("has_more"):
            return [by_step[s] for s in sorted(by_step)]
        after = page["cursor"]


def legacy_rows(points: list[dict], extra: dict[int, dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the legacy results file from per-step metrics and each step's
    classification/* values (`extra`, from the results CSV)."""
    classification = sorted({k for row in extra.values() for k in row})
    rows = [{**{name: _fmt(name, p.get(source)) for name, source in M.LEGACY_CSV_SOURCES.items()},
             **{k: extra.get(p["step"], {}).get(k, "") for k in classification}} for p in points]
    return list(M.LEGACY_CSV_FIELDS) + classification, rows


def _fmt(name: str, value) -> str:
    if value is None:
        return ""
    if name == "step" or name in M.ELAPSED_KEYS:
        return str(int(value))   # counters: the metrics come back as floats
    return f"{value:.6f}"
