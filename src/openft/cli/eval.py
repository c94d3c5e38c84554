"""`openft evals ...` (the Evals API through the openai SDK, with a live progress bar on a run)
and `openft eval compare|forgetting` (the same items on several models, side by side).

Thin: parse, call the SDK or openft.eval.compare, print. A model may live on another
OpenAI-compatible server: `-m MODEL@BASE_URL`, its key from `--api-key-for BASE_URL=KEY` (or
OPENAI_API_KEY for api.openai.com).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from openft.cli.common import client, fail, fmt_time, parse_key_values, print_json, print_table, to_dict, typer_app

evals_app = typer_app("The Evals API: evals, their runs and results (OpenAI's client.evals).")
eval_app = typer_app("Compare models on the same items; measure forgetting against the base model.")
TERMINAL = ("completed", "failed", "canceled")


def _json_arg(value: str, option: str):
    """A JSON text, or @FILE / a path to a JSON file."""
    path = Path(value[1:] if value.startswith("@") else value).expanduser()
    text = path.read_text() if path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{option} is neither a JSON file nor JSON text: {e.msg}")


@evals_app.command("create")
def evals_create(
    item_schema: str = typer.Option(..., "--item-schema", help="JSON schema of an item (JSON text or file)."),
    criteria: str = typer.Option(..., "--criteria", help="testing_criteria: a JSON list of graders (text or file)."),
    name: Optional[str] = typer.Option(None, "--name"),
    include_sample_schema: bool = typer.Option(True, "--include-sample-schema/--no-sample-schema",
                                               help="Graders may refer to {{sample.output_text}}."),
    metadata: Optional[list[str]] = typer.Option(None, "--metadata", help="key=value (repeatable)."),
):
    """Create an eval (data_source_config type custom)."""
    ev = client().evals.create(
        name=name, data_source_config={"type": "custom", "item_schema": _json_arg(item_schema, "--item-schema"),
                                       "include_sample_schema": include_sample_schema},
        testing_criteria=_json_arg(criteria, "--criteria"), metadata=parse_key_values(metadata, "--metadata"))
    print_json(ev)


@evals_app.command("list")
def evals_list(limit: int = typer.Option(20, "--limit"), as_json: bool = typer.Option(False, "--json")):
    """List evals."""
    data = list(client().evals.list(limit=limit, order="desc"))[:limit]
    if as_json:
        return print_json(data)
    print_table(data, [("id", lambda e: e.id), ("name", lambda e: e.name),
                       ("created", lambda e: fmt_time(e.created_at)),
                       ("criteria", lambda e: ", ".join(c.name for c in e.testing_criteria))])


@evals_app.command("get")
def evals_get(eval_id: str):
    """Show one eval."""
    print_json(client().evals.retrieve(eval_id))


@evals_app.command("delete")
def evals_delete(eval_id: str):
    """Delete an eval (and cancel its unfinished runs)."""
    print_json(client().evals.delete(eval_id))


def _items_source(data: str) -> dict:
    if data.startswith("file-"):
        return {"type": "file_id", "id": data}
    path = Path(data).expanduser()
    if not path.is_file():
        fail(f"--data: no such file: {data}")
    from openft.eval.datasource import parse_items

    return {"type": "file_content", "content": [{k: v for k, v in it.items() if v is not None}
                                                for it in parse_items(path.read_text(), "--data")]}


def follow_run(c, eval_id: str, run_id: str, interval: float = 1.0):
    """Poll the run with a live progress bar until it ends; returns the final run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(run_id, total=None)
        while True:
            run = c.evals.runs.retrieve(run_id, eval_id=eval_id)
            rc = run.result_counts
            bar.update(task, total=rc.total, completed=rc.passed + rc.failed + rc.errored,
                       description=f"{run.status}: {rc.passed} passed, {rc.failed} failed, {rc.errored} errored")
            if run.status in TERMINAL:
                return run
            time.sleep(interval)


def _summary(run) -> None:
    rc = run.result_counts
    print(f"Run {run.id}: {run.status}. {rc.passed} passed, {rc.failed} failed, {rc.errored} errored of {rc.total}.")
    for c in run.per_testing_criteria_results:
        print(f"  {c.testing_criteria}: {c.passed} passed, {c.failed} failed")
    if run.error and getattr(run.error, "message", None):
        print(f"  error: {run.error.message}")


@evals_app.command("run")
def evals_run(
    eval_id: str,
    data: str = typer.Option(..., "--data", "-d", help="JSONL of items (local path) or a file id."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Generate samples with this model (base, "
                                        "ft:, checkpoint); without it the items' own samples are graded."),
    user: str = typer.Option("{{item.input}}", "--user", help="User message template."),
    system: Optional[str] = typer.Option(None, "--system", help="System message template."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    name: Optional[str] = typer.Option(None, "--name"),
    no_follow: bool = typer.Option(False, "--no-follow", help="Return after creating the run."),
):
    """Start a run of an eval and follow it with a progress bar."""
    source = _items_source(data)
    if model:
        template = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        sp = {k: v for k, v in (("max_completion_tokens", max_tokens), ("temperature", temperature)) if v is not None}
        ds = {"type": "completions", "model": model, "source": source, "sampling_params": sp,
              "input_messages": {"type": "template", "template": template}}
    else:
        ds = {"type": "jsonl", "source": source}
    c = client()
    run = c.evals.runs.create(eval_id, data_source=ds, **({"name": name} if name else {}))
    print(f"Created run {run.id} of eval {eval_id}", flush=True)
    if no_follow:
        return
    try:
        run = follow_run(c, eval_id, run.id)
    except KeyboardInterrupt:
        print(f"\nStopped following; the run goes on. Results: openft evals results {eval_id} {run.id}",
              file=sys.stderr)
        raise typer.Exit(130) from None
    _summary(run)
    if run.status != "completed":
        raise typer.Exit(1)


@evals_app.command("runs")
def evals_runs(eval_id: str, limit: int = typer.Option(20, "--limit")):
    """List an eval's runs."""
    data = list(client().evals.runs.list(eval_id, limit=limit, order="desc"))[:limit]
    print_table(data, [("id", lambda r: r.id), ("status", lambda r: r.status), ("model", lambda r: r.model or "-"),
                       ("passed", lambda r: r.result_counts.passed), ("failed", lambda r: r.result_counts.failed),
                       ("errored", lambda r: r.result_counts.errored), ("created", lambda r: fmt_time(r.created_at))])


@evals_app.command("results")
def evals_results(eval_id: str, run_id: str,
                  status: Optional[str] = typer.Option(None, "--status", help="pass | fail | error"),
                  as_json: bool = typer.Option(False, "--json")):
    """A run's result counts and its output items."""
    c = client()
    run = c.evals.runs.retrieve(run_id, eval_id=eval_id)
    kw = {"status": status} if status else {}
    items = list(c.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=100, **kw))
    if as_json:
        return print_json({"run": to_dict(run), "output_items": to_dict(items)})
    _summary(run)

    def output(o):
        out = (o.sample.output or [None])[0] if o.sample and o.sample.output else None
        return (out.content if out else "") or (o.sample.error.message if o.sample and o.sample.error else "")

    print_table(items, [("#", lambda o: o.datasource_item_id), ("status", lambda o: o.status),
                        ("scores", lambda o: ", ".join(f"{r.name}={r.score:.2f}" for r in o.results)),
                        ("output", lambda o: output(o)[:60])])


# -- eval compare / forgetting ---------------------------------------------------------------

def _client_for(base_url: Optional[str], keys: dict[str, str]):
    if base_url is None:
        return client()
    from openai import OpenAI

    key = keys.get(base_url) or keys.get(base_url.rstrip("/"))
    if key is None and "api.openai.com" in base_url:
        key = os.environ.get("OPENAI_API_KEY")
    if key is None:
        fail(f"no API key for {base_url}: pass --api-key-for {base_url}=KEY")
    return OpenAI(base_url=base_url, api_key=key, max_retries=2, timeout=600)


def split_model(spec: str) -> tuple[str, Optional[str]]:
    """"MODEL@BASE_URL" -> (MODEL, BASE_URL); a plain id -> (id, None)."""
    model, sep, url = spec.rpartition("@")
    if sep and url.startswith(("http://", "https://")):
        return model, url
    return spec, None


def _run_models(models: list[str], prompts, keys, *, max_tokens: int, logprobs: bool, concurrency: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from openft.eval.compare import predict

    out = {}
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        for spec in models:
            model, url = split_model(spec)
            task = bar.add_task(spec, total=len(prompts))
            out[spec] = predict(_client_for(url, keys), model, prompts, max_tokens=max_tokens, logprobs=logprobs,
                                concurrency=concurrency, on_done=lambda t=task: bar.advance(t))
    return out


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


@eval_app.command("compare")
def eval_compare(
    file: Path = typer.Argument(..., help="JSONL: chat examples (the last assistant message is the reference) "
                                "or prompt/completion."),
    models: list[str] = typer.Option(..., "-m", "--model", help="A model (base, ft:, checkpoint), or "
                                     "MODEL@BASE_URL on another server; repeat for each model."),
    kind: str = typer.Option("auto", "--kind", help="auto | labels | text: classification or free-text metrics."),
    show_diff: bool = typer.Option(False, "--show-diff", help="List the items where the models disagree."),
    max_tokens: int = typer.Option(64, "--max-tokens"),
    positive_class: Optional[str] = typer.Option(None, "--positive-class", help="Binary tasks: the positive label."),
    concurrency: int = typer.Option(32, "--concurrency", help="Requests in flight per model."),
    api_key_for: Optional[list[str]] = typer.Option(None, "--api-key-for", help="BASE_URL=KEY for a model on "
                                                    "another server (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Run the same items on every model and print their metrics side by side."""
    from openft.eval import compare

    if kind not in ("auto", "labels", "text"):
        fail(f"--kind must be auto, labels or text, not {kind!r}")
    if not file.is_file():
        fail(f"no such file: {file}")
    try:
        items = compare.read_items(file)
    except ValueError as e:
        fail(str(e))
    refs = [r for _, r in items]
    kind = compare.detect_kind(refs) if kind == "auto" else kind
    preds = _run_models(models, [p for p, _ in items], parse_key_values(api_key_for, "--api-key-for") or {},
                        max_tokens=max_tokens, logprobs=kind == "labels", concurrency=concurrency)
    scores = {m: compare.score(kind, refs, p, positive=positive_class) for m, p in preds.items()}
    errors = {m: sum(1 for x in p if x.error) for m, p in preds.items()}
    if as_json:
        return print_json({"kind": kind, "n": len(items), "metrics": {
            m: {k: v for k, v in s.items() if k != "per_item"} for m, s in scores.items()}, "errors": errors})
    keys = [k for k in compare.TABLE_KEYS[kind] if any(s.get(k) is not None for s in scores.values())]
    rows = [(k, [scores[m].get(k) for m in models]) for k in keys] + [("errors", [errors[m] for m in models])]
    print_table(rows, [("metric", lambda r: r[0])] + [(m, lambda r, i=i: _fmt(r[1][i])) for i, m in enumerate(models)],
                title=f"{len(items)} items, task kind: {kind}")
    if show_diff:
        diff = compare.disagreements({m: scores[m]["predictions"] for m in models})
        print(f"{len(diff)} of {len(items)} items where the models disagree:")
        print_table(diff, [("#", lambda i: i), ("reference", lambda i: refs[i][:40])]
                    + [(m, lambda i, m=m: str(scores[m]["predictions"][i])[:40]) for m in models])
    if any(errors.values()):
        first = next(x.error for p in preds.values() for x in p if x.error)
        print(f"note: some requests failed; the first: {first}", file=sys.stderr)


def base_of(model: str) -> str:
    """The base model of `ft:<base>:<org>:<suffix>:<id>[:ckpt-step-N]`."""
    parts = model.split(":")
    if len(parts) < 3 or parts[0] != "ft":
        fail(f"{model} is not a fine-tuned model id (ft:...); pass --base")
    return parts[1]


@eval_app.command("forgetting")
def eval_forgetting(
    model: str = typer.Option(..., "-m", "--model", help="The fine-tuned model (ft:...)."),
    base: Optional[str] = typer.Option(None, "--base", help="Compare with this model (default: the ft: id's base)."),
    per_category: Optional[int] = typer.Option(None, "--per-category", help="At most N questions per category "
                                               "(default: all 40)."),
    concurrency: int = typer.Option(32, "--concurrency"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Accuracy of the fine-tuned model and its base on 160 MMLU questions (MIT licence, bundled),
    per category (stem, humanities, social_sciences, other), and the drop."""
    from openft.eval import compare

    base = base or base_of(model)
    rows = compare.mmlu_items(per_category=per_category)
    prompts = [compare.mmlu_prompt(r) for r in rows]
    preds = _run_models([base, model], prompts, {}, max_tokens=4, logprobs=True, concurrency=concurrency)
    report = compare.forgetting_report(rows, preds[base], preds[model])
    reading = {side: compare.answer_reading(preds[m], list("ABCD")) for side, m in (("base", base), ("tuned", model))}
    if as_json:
        return print_json({"base": base, "model": model, "categories": report, "answers": reading})
    print_table(sorted(report.items(), key=lambda kv: kv[0] == "all"),
                [("category", lambda kv: kv[0]), ("n", lambda kv: kv[1]["n"]),
                 (base, lambda kv: f"{kv[1]['base']:.3f}"), (model, lambda kv: f"{kv[1]['tuned']:.3f}"),
                 ("drop", lambda kv: f"{kv[1]['drop']:+.3f}")],
                title="General ability (MMLU subset, 4-choice; chance = 0.25)")
    for side, m in (("base", base), ("tuned", model)):
        print(_reading_line(m, reading[side]))


def _reading_line(model: str, r: dict) -> str:
    """How many of a model's answers could not be read, and how they were scored."""
    line = (f"{model}: could not read {r['unreadable']} of {r['n']} answers (no A-D in the text): "
            f"{r['from_logprobs']} scored from the first token's log-probabilities, {r['counted_wrong']} counted wrong")
    return line + (f"; {r['failed']} requests failed (counted wrong)" if r["failed"] else "")
