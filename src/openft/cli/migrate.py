"""`openft migrate ...`: bring fine-tuning jobs, files and a model's behaviour over from OpenAI.

    openft migrate from-openai [--dry-run] [--job ID ...] [--base-model SOURCE=TARGET ...]
    openft migrate record --source-model ft:... --prompts FILE -o OUT.jsonl

The source is `--source-base-url` (OpenAI's API by default) with `--source-api-key` (default
OPENAI_API_KEY); the target is the openft server of the global `--base-url` / `--api-key`
(OPENAI_API_KEY is not used for the target here: it is the source's). The work is done by
openft.migrate; this module parses, prints and picks the exit status.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from openft.cli.common import fail, local_settings, state, typer_app

app = typer_app("Migrate fine-tuning jobs, files and model behaviour from OpenAI to openft.")

OPENAI_URL = "https://api.openai.com/v1"
_SOURCE_URL = typer.Option(OPENAI_URL, "--source-base-url", help="The source's API root (any server that speaks "
                           "OpenAI's API).")
_SOURCE_KEY = typer.Option(None, "--source-api-key", help="The source's API key (default: env OPENAI_API_KEY).",
                           show_default=False)
_RETRIES = typer.Option(6, "--max-retries", min=0, max=50, help="Retries per source request (429s wait for the "
                        "server's Retry-After, up to 2 minutes each).")


def _source_client(url: str, key: Optional[str], retries: int):
    from openai import OpenAI

    key = key or os.environ.get("OPENAI_API_KEY")
    if not key:
        fail("no source API key: pass --source-api-key or set OPENAI_API_KEY")
    if "://" not in url:
        fail(f"--source-base-url must look like https://HOST/v1, not {url!r}")
    return OpenAI(base_url=url.rstrip("/"), api_key=key, max_retries=retries, timeout=600)


def _target_client():
    from openai import OpenAI

    st = state()
    return OpenAI(base_url=st.resolved_base_url(), api_key=st.resolved_api_key(openai_env=False), max_retries=2,
                  timeout=600)


def _note(line: str) -> None:
    print(line, flush=True)


def _plan_lines(plan, facts) -> list[str]:
    hp = ", ".join(f"{k}={v}" for k, v in plan.hyperparameters.items()) or "all auto"
    extra = [f"suffix {plan.suffix!r}" if plan.suffix else None, f"seed {plan.seed}" if plan.seed is not None else None]
    lines = [f"{plan.source_id}  {plan.status}  {plan.source_model} -> {plan.target_model} ({plan.target_why})",
             f"  {plan.method}: {hp}; " + "; ".join(x for x in extra if x) + f"; metadata {plan.metadata}"]
    for ff in (facts.files if facts else []):
        counted = (f"{ff.n_examples:,} examples, {ff.tokens:,} tokens" if ff.tokens is not None
                   else f"{ff.n_examples:,} examples, tokens unknown" if ff.n_examples is not None else "")
        lines.append(f"  {ff.role} file {ff.file_id}  {ff.filename}  {ff.bytes:,} bytes  {counted}")
        if ff.errors:
            lines.append(f"    {ff.errors} problem(s) openft's validation would fail the job on, first: {ff.first_error}")
    if facts is not None and facts.files:
        lines.append(f"  time on this machine: {facts.time_line()}")
    lines.extend(f"  note: {n}" for n in plan.notes)
    return lines


@app.command("from-openai")
def from_openai(
    source_base_url: str = _SOURCE_URL,
    source_api_key: Optional[str] = _SOURCE_KEY,
    job: Optional[list[str]] = typer.Option(None, "--job", help="A source job id to migrate (repeatable; default: "
                                            "every succeeded job)."),
    all_statuses: bool = typer.Option(False, "--all-statuses", help="Also jobs that failed or were cancelled."),
    base_model: Optional[list[str]] = typer.Option(None, "--base-model", help="SOURCE=TARGET base model mapping "
                                                   "(repeatable; SOURCE may use * patterns)."),
    map_file: Optional[Path] = typer.Option(None, "--map-file", help="A JSON or TOML table of source model = "
                                            "target base."),
    default_base: Optional[str] = typer.Option(None, "--default-base", help="The base for unmapped source models "
                                               "(default: openft's default base)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (files, sizes, tokens, time on this "
                                 "machine) and change nothing."),
    probe: bool = typer.Option(False, "--probe", help="With --dry-run: when no earlier job measured this "
                               "machine's pace for a base, measure it with a short training probe."),
    max_retries: int = _RETRIES,
):
    """Copy fine-tuning jobs and their files from OpenAI to openft and create the same jobs here.

    Each source job becomes a job on an open-weight base (see --base-model) with the same method,
    the hyperparameters the source resolved, its suffix, seed and metadata, plus
    metadata.migrated_from = the source job id. Running it again skips what is already here.
    """
    from openft.migrate.plan import ModelMap, plan_job
    from openft.migrate.transfer import Migration, Outcome
    from openft.models.registry import DEFAULT_MODEL

    model_map = ModelMap.build(base_model, map_file, default_base or DEFAULT_MODEL)
    source = _source_client(source_base_url, source_api_key, max_retries)
    target = _target_client()
    estimator = None
    if dry_run:
        from openft.cli.data import load_tokenizer
        from openft.migrate.measure import Estimator

        estimator = Estimator(local_settings(), lambda m: load_tokenizer(m, light=True), probe=probe)
    run = Migration(source, target, source_url=source_base_url, target_url=state().resolved_base_url(),
                    echo=_note, estimator=estimator)
    outcomes: list[Outcome] = []
    if dry_run:
        print("Plan (dry run: nothing is uploaded or created)\n")
    try:
        for item in run.source_jobs(job, all_statuses=all_statuses):
            if isinstance(item, Outcome):
                outcomes.append(item)
                print(item.line, file=sys.stderr, flush=True)
                continue
            plan = plan_job(item, model_map)
            if not dry_run:
                for line in _plan_lines(plan, None):
                    _note(line)
            outcome = run.migrate(plan, dry_run=dry_run)
            if dry_run:
                for line in _plan_lines(plan, estimator.jobs.get(plan.source_id)):
                    _note(line)
            outcomes.append(outcome)
            print(f"  -> {outcome.line}", file=sys.stderr if outcome.status == "failed" else sys.stdout, flush=True)
            print(flush=True)
    finally:
        run.close()
    _summary(outcomes, dry_run)


def _summary(outcomes, dry_run: bool) -> None:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    order = ("planned", "migrated", "already", "skipped", "failed")
    parts = [f"{counts[k]} {'to migrate' if k == 'planned' else 'already migrated' if k == 'already' else k}"
             for k in order if counts.get(k)]
    print(f"{len(outcomes)} job(s): {', '.join(parts) or 'nothing to migrate'}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        for o in failed:
            print(f"failed: {o.line}", file=sys.stderr)
        print("Run the same command again to retry them; what is already migrated is skipped.", file=sys.stderr)
        raise typer.Exit(1)


@app.command("record")
def record(
    source_model: str = typer.Option(..., "--source-model", help="The source model to ask (ft:...)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSONL of chat messages (or prompt/completion, "
                                           "evals records), or plain text lines: one prompt each."),
    from_validation_file: Optional[str] = typer.Option(None, "--from-validation-file", help="A source file id "
                                                       "(file-...) whose examples are the prompts."),
    output: Path = typer.Option(..., "--output", "-o", help="The chat JSONL to write (appended to: an interrupted "
                                "run resumes)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=64, help="Requests in flight at once."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Longest answer, in tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, max=2.0, help="Sampling "
                                                "temperature (default: the source's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed, where the source honours one."),
    source_base_url: str = _SOURCE_URL,
    source_api_key: Optional[str] = _SOURCE_KEY,
    max_retries: int = _RETRIES,
):
    """Ask a source model each prompt and write its answers as a chat training file for openft.

    For when a job's files are gone, or the model is better than its data. Prompts already
    answered in the output are skipped, so running it again finishes an interrupted run.
    """
    from openft.migrate import record as rec
    from openft.migrate.faults import describe

    if (prompts is None) == (from_validation_file is None):
        fail("give exactly one of --prompts FILE and --from-validation-file FILE_ID")
    source = _source_client(source_base_url, source_api_key, max_retries)
    if prompts is not None:
        items = rec.read_prompts(prompts)
    else:
        items = _prompts_from_source(source, from_validation_file, source_base_url, describe)
    if not items:
        fail("no prompts to ask")
    params = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed))
              if v is not None}
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("recording"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("record", total=len(items))
        result = rec.record(source, source_model, items, output, concurrency=concurrency, params=params,
                            source_url=source_base_url, progress=lambda n: bar.update(task, completed=n))
    print(f"{output}: {result.already + result.answered} of {result.total} prompt(s) answered "
          f"({result.answered} now, {result.already} before)")
    for line in result.failed:
        print(f"failed: {line}", file=sys.stderr)
    if result.stopped:
        fail(result.stopped)
    if result.failed:
        print("Run the same command again to ask the missing prompts.", file=sys.stderr)
        raise typer.Exit(1)
    print(f"next: openft files upload {output}   (or: openft jobs create -t {output} -m BASE)")


def _prompts_from_source(source, file_id: str, url: str, describe) -> list[list[dict]]:
    """The prompts of a source file, streamed to a temporary file first."""
    import tempfile

    from openft.migrate import record as rec
    from openft.migrate.transfer import download

    with tempfile.TemporaryDirectory(prefix="openft-record-") as tmp:
        path = Path(tmp) / "prompts.jsonl"
        try:
            download(source, file_id, path)
        except Exception as e:  # noqa: BLE001 - one line
            import openai

            if isinstance(e, openai.NotFoundError):
                fail(f"the source has no file {file_id} (deleted?)")
            if isinstance(e, openai.OpenAIError):
                fail(describe(e, "source", url))
            raise
        return rec.read_prompts(path)
