"""`openft data ...`: the data toolkit's commands (convert, validate, split, overlap, inspect,
synthesize). Thin: parse options, call `openft.data`, print. Every user mistake ends in one
line `error: ...` on stderr and exit code 1; validate and overlap also exit 1 when they find
errors or leakage (their report says which).

Knows nothing about HTTP or jobs; the model for token statistics is materialized locally
(`openft.models.materialize`), the model for `synthesize` is reached over the OpenAI API.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from openft.errors import OpenFTError

data_app = typer.Typer(help="Convert, validate, split, inspect and synthesize fine-tuning data.",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _guard(fn):
    """User mistakes (OpenFTError, missing files) -> `error: ...` and exit 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpenFTError as e:
            typer.echo(e.one_line(), err=True)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            typer.echo(f"error: {e.strerror or e}: {e.filename}", err=True)
        except OSError as e:
            typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    return wrapper


def _settings():
    from openft.cli.common import local_settings

    return local_settings()


def load_tokenizer(model: str, *, light: bool = False) -> tuple[Any, int | None]:
    """(tokenizer, context length) of a base model id, a registered name or a local folder.

    light: without PyTorch when the folder allows it (`openft.data.light_tokenizer`), so that
    validation runs in little memory.
    """
    from openft.models import materialize

    folder = model if Path(model).is_dir() else materialize(_settings(), model)
    tok = None
    if light:
        from openft.data.light_tokenizer import LightTokenizer

        tok = LightTokenizer.load(folder)
    if tok is None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
    ctx = None
    cfg = Path(folder) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        ctx = c.get("max_position_embeddings") or c.get("text_config", {}).get("max_position_embeddings")
    if ctx is None and 0 < (tok.model_max_length or 0) < 1_000_000:
        ctx = tok.model_max_length
    return tok, ctx


# ------------------------------------------------------------------------------ convert
@data_app.command()
@_guard
def convert(
    input: Path = typer.Argument(..., help="JSONL (chat, prompt/completion, preference, evals), CSV, TSV, XLSX or Parquet."),
    output: Path = typer.Argument(..., help="The JSONL file to write."),
    from_: Optional[str] = typer.Option(None, "--from", help="Input kind: jsonl, csv, tsv, xlsx, parquet (default: from the extension)."),
    map_: Optional[list[str]] = typer.Option(None, "--map", help="COLUMN=ROLE (system, user, assistant, prompt, completion); repeat or comma-separate."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt added to every example that has none."),
    to: str = typer.Option("chat", "--to", help="chat or prompt_completion."),
    sheet: Optional[str] = typer.Option(None, "--sheet", help="XLSX sheet (default: the first)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad records (listed) instead of stopping at the first."),
):
    """Convert a dataset to fine-tuning JSONL (chat, or legacy prompt/completion), streaming."""
    from openft.data.convert import convert_file, parse_mapping

    r = convert_file(input, output, from_=from_, mapping=parse_mapping(map_), system=system, to=to, sheet=sheet,
                     skip_invalid=skip_invalid)
    typer.echo(f"{input} ({r.input_format}, {r.n_read} records) -> {output}: {r.n_written} {r.output_format} examples")
    if r.mapping:
        cols = ", ".join(f"{c} -> {role}" for c, role in r.mapping.items())
        typer.echo(f"columns: {cols}" + (f"; ignored: {', '.join(r.ignored_columns)}" if r.ignored_columns else ""))
    if system is not None:
        typer.echo(f"system prompt: {system!r}")
    if r.labels:
        total = sum(r.labels.values())
        typer.echo("labels: " + ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in r.labels.most_common()))
    if r.n_skipped:
        typer.echo(f"skipped {r.n_skipped} invalid records:")
        for s in r.skipped:
            typer.echo(f"  {s}")
    typer.echo(f"next: openft data validate {output} -m smollm2-135m-instruct")


# ------------------------------------------------------------------------------ validate
def _fmt_dist(name: str, d: dict | None) -> str:
    if not d:
        return ""
    return f"  {name:<24}" + "".join(f"{d[k]:>9}" for k in ("min", "p5", "median", "mean", "p95", "max"))


def render_report(rep, *, model: str | None = None, out=None) -> str:
    """The human-readable validation report."""
    from openft.data.estimate import human_duration

    s = rep.stats
    lines = []
    verdict = "OK" if rep.ok else "FAILED"
    n_err = sum(rep.counts[c] for c in {e.code for e in rep.errors})
    n_warn = sum(rep.counts[c] for c in {w.code for w in rep.warnings})
    lines.append(f"{rep.file}: {rep.format or 'unknown format'}, {rep.n_examples} examples: {verdict} "
                 f"({n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)})")
    for title, issues in (("errors", rep.errors), ("warnings", rep.warnings)):
        if not issues:
            continue
        lines.append(f"\n{title}:")
        shown: dict[str, int] = {}
        for i in issues:
            shown[i.code] = shown.get(i.code, 0) + 1
            if shown[i.code] <= 10:
                lines.append(f"  {i}  [{i.code}]")
        for code in shown:
            if rep.counts[code] > 10:
                lines.append(f"  ... {rep.counts[code] - 10} more {code}")
    if s.get("messages_per_example") or s.get("tokens_per_example"):
        tok = f" (tokens: {model}" + (f", context {s['max_seq_len']}" if s.get("max_seq_len") else "") + ")" if model else ""
        lines.append(f"\nstatistics over {s['n_valid_examples']} valid examples{tok}:")
        lines.append(f"  {'':<24}" + "".join(f"{h:>9}" for h in ("min", "p5", "median", "mean", "p95", "max")))
        for name, key in (("messages/example", "messages_per_example"), ("tokens/example", "tokens_per_example"),
                          ("trained tokens/example", "trained_tokens_per_example")):
            if s.get(key):
                lines.append(_fmt_dist(name, s[key]))
        if "n_missing_system" in s:
            lines.append(f"  missing a system message: {s['n_missing_system']}; missing a user message: "
                         f"{s['n_missing_user']}")
        lines.append(f"  duplicates: {s['n_duplicates']}" +
                     (f"; over the context (will be truncated): {s['n_too_long']}" if "n_too_long" in s else ""))
    if s.get("labels"):
        total = sum(s["labels"].values())
        lines.append("\nlabels (the assistant answers look like labels):")
        for lab, n in list(s["labels"].items())[:20]:
            lines.append(f"  {lab[:40]:<20} {n:>8}  {100 * n / total:5.1f}%")
    est = s.get("estimate")
    if est:
        lines.append("\nestimate:")
        lines.append(f"  epochs{' (auto)' if est['n_epochs_is_auto'] else ''}: {est['n_epochs']}")
        lines.append(f"  tokens trained: {est['trained_tokens']:,} ({est['trained_tokens_per_epoch']:,} per epoch; "
                     f"{est['processed_tokens']:,} processed)")
        pace = (f" at {est['tokens_per_second']:,.0f} tokens/s (from {est['pace_source']})"
                if est["tokens_per_second"] else "")
        lines.append(f"  time on this machine: {human_duration(est['estimated_seconds'])}{pace}")
    elif model is None and rep.ok:
        lines.append("\n(add -m MODEL for token statistics, the context check and time estimates)")
    return "\n".join(lines)


@data_app.command()
@_guard
def validate(
    file: Path = typer.Argument(..., help="The JSONL training file."),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="Base model whose tokenizer counts tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Context to check against (default: the model's)."),
    n_epochs: Optional[int] = typer.Option(None, "--n-epochs", help="Epochs for the estimate (default: what auto picks)."),
    min_examples: int = typer.Option(10, "--min-examples", help="Fewer examples is an error."),
):
    """Check a training file: every problem with its line and field, token statistics, estimates."""
    from openft.data.validate import validate_file

    if not file.is_file():
        raise OpenFTError(f"{file}: no such file", param="file")
    tok = None
    if model:
        tok, ctx = load_tokenizer(model, light=True)
        max_seq_len = max_seq_len or ctx
    pace = None
    if model:  # this machine's pace: earlier jobs of the model in the local data folder
        from openft.store.pace import pace_in_data_dir

        pace = pace_in_data_dir(_settings(), model)
    rep = validate_file(file, tokenizer=tok, max_seq_len=max_seq_len, min_examples=min_examples, model=model,
                        n_epochs=n_epochs, pace=pace)
    if as_json:
        typer.echo(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_report(rep, model=model))
    if not rep.ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ split / overlap
@data_app.command()
@_guard
def split(
    file: Path = typer.Argument(..., help="The JSONL file to split."),
    valid: float = typer.Option(0.1, "--valid", help="Validation share (0..1) or count (>= 1)."),
    seed: int = typer.Option(42, "--seed"),
    stratify: Optional[bool] = typer.Option(None, "--stratify/--no-stratify",
                                            help="By label (default: when the answers look like labels)."),
    train_out: Optional[Path] = typer.Option(None, "--train-out", help="(default: FILE.train.jsonl)"),
    valid_out: Optional[Path] = typer.Option(None, "--valid-out", help="(default: FILE.valid.jsonl)"),
):
    """Split into training and validation files: duplicates removed, stratified by label, no leakage."""
    from openft.data.split import split_file

    r = split_file(file, valid=valid, seed=seed, stratify=stratify, train_out=train_out, valid_out=valid_out)
    typer.echo(f"{file}: {r.n_read} examples, {r.n_duplicates} duplicates removed")
    typer.echo(f"  train: {r.train_file} ({r.n_train})\n  valid: {r.valid_file} ({r.n_valid})")
    if r.stratified_by:
        typer.echo("  stratified by label (train / valid): " +
                   ", ".join(f"{k} {t}/{v}" for k, (t, v) in r.stratified_by.items()))
    typer.echo(f"  overlap between the two: {r.leaks} examples")


@data_app.command()
@_guard
def overlap(
    a: Path = typer.Argument(..., help="The reference file (e.g. train)."),
    b: Path = typer.Argument(..., help="The file checked against it (e.g. validation or test)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Leakage report: examples (or prompts) of B that also appear in A. Exit 1 when any do."""
    from dataclasses import asdict

    from openft.data.split import overlap as find_overlap

    r = find_overlap(a, b)
    if as_json:
        typer.echo(json.dumps(asdict(r) | {"clean": r.clean}, indent=2))
    else:
        typer.echo(f"{b} ({r.n_b} examples) against {a} ({r.n_a} examples):")
        typer.echo(f"  identical examples: {r.n_same}")
        for lb, la in r.same[:10]:
            typer.echo(f"    {b}:{lb} = {a}:{la}")
        typer.echo(f"  same prompt, different answer: {r.n_same_prompt}")
        for lb, la in r.same_prompt[:10]:
            typer.echo(f"    {b}:{lb} ~ {a}:{la}")
        typer.echo("  no leakage" if r.clean else "  LEAKAGE: remove these from one of the files")
    if not r.clean:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ inspect
@data_app.command()
@_guard
def inspect(
    file: Path = typer.Argument(..., help="A JSONL file (any supported format)."),
    model: str = typer.Option(..., "-m", "--model", help="Base model whose tokenizer and chat template to use."),
    line: int = typer.Option(1, "--line", "-l", help="Which line to show (1-based)."),
    count: int = typer.Option(1, "-n", help="How many examples from that line on."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="(default: the model's context)"),
    color: Optional[bool] = typer.Option(None, "--color/--no-color", help="(default: when printing to a terminal)"),
):
    """Show how examples are tokenized and which tokens are trained (green, or [[...]] without color)."""
    from openft.data import formats as F
    from openft.data.encode import encode_example, render_mask
    from openft.data.reader import iter_records
    from openft.errors import DataError

    if not file.is_file():
        raise OpenFTError(f"{file}: no such file", param="file")
    tok, ctx = load_tokenizer(model, light=True)
    color = sys.stdout.isatty() if color is None else color
    shown = 0
    for n, _text, rec in iter_records(file, allow_utf16=True, start_line=line):
        fmt = F.detect(rec)
        errors = [i for i in F.check(rec, fmt or "") if i[3] == F.ERROR]
        if errors:
            raise DataError(errors[0][2], file=str(file), line=n, field=errors[0][1], code=errors[0][0])
        ex = rec if fmt == F.PROMPT_COMPLETION else F.to_chat(rec, fmt)
        try:
            enc = encode_example(tok, ex, max_seq_len or ctx)
        except DataError as e:
            raise DataError(e.message, file=str(file), line=n, field=e.field, code=e.code) from None
        typer.echo(f"== {file}:{n} ({fmt})")
        typer.echo(render_mask(tok, enc, color=color))
        shown += 1
        if shown >= count:
            break
    if not shown:
        raise OpenFTError(f"{file}: no example at line {line} or after", param="line")


# ------------------------------------------------------------------------------ synthesize
@data_app.command()
@_guard
def synthesize(
    docs: Optional[list[Path]] = typer.Argument(None, help="Documents: .txt, .md or .html."),
    output: Path = typer.Option(..., "-o", "--output", help="Chat JSONL to write (plus OUTPUT.review.jsonl)."),
    model: Optional[str] = typer.Option(None, "--model", help="Chat model that writes questions and answers."),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENFT_BASE_URL",
                                           help="Any OpenAI-compatible API (default: http://127.0.0.1:8000/v1)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="(env OPENFT_API_KEY / OPENAI_API_KEY)"),
    questions: int = typer.Option(5, "--questions", help="Questions asked per passage."),
    chunk_chars: int = typer.Option(3000, "--chunk-chars", help="Passage size, in characters."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt of the training examples."),
    with_context: bool = typer.Option(False, "--with-context", help="Put the passage in the user message (RAG style)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Longest reply asked of the model."),
    temperature: float = typer.Option(0.7, "--temperature"),
    apply_review: Optional[Path] = typer.Option(None, "--apply-review", help="A reviewed .review.jsonl: write the kept and fixed pairs to OUTPUT."),
):
    """Question/answer pairs from documents, with a review file; then --apply-review."""
    from openft.data import synthesize as S

    if apply_review is not None:
        counts = S.apply_review(apply_review, output)
        typer.echo(f"{apply_review}: {counts['keep']} kept, {counts['fixed']} fixed, {counts['reject']} rejected, "
                   f"{counts['pending']} not reviewed (left out) -> {output}: {counts['written']} examples")
        return
    if not docs:
        raise OpenFTError("give the documents to read (or --apply-review REVIEW_FILE)", param="docs")
    if not model:
        raise OpenFTError("--model is required: the chat model that writes the questions and answers", param="model")
    from openai import OpenAI

    from openft.cli.common import DEFAULT_BASE_URL, State, state

    try:
        st = state()
    except RuntimeError:  # used outside the root app (tests, embedding)
        st = State()
    try:  # the same order as every other command: --api-key, OPENFT_API_KEY, OPENAI_API_KEY, admin_key
        key = api_key or st.resolved_api_key()
    except Exception:  # noqa: BLE001 - endpoints like Ollama or vLLM take any key
        key = "none"
    client = OpenAI(base_url=base_url or DEFAULT_BASE_URL, api_key=key, max_retries=1, timeout=300)
    r = S.synthesize(docs, output, client=client, model=model, questions_per_chunk=questions,
                     chunk_chars=chunk_chars, system=system, with_context=with_context, max_tokens=max_tokens,
                     temperature=temperature, progress=lambda m: typer.echo(m, err=True))
    typer.echo(f"{r.n_documents} documents, {r.n_chunks} passages: {r.n_questions} questions, {r.n_pairs} answered "
               f"({r.n_unanswered} not answerable from the passage, {r.n_failed_calls} failed calls)")
    typer.echo(f"wrote {r.out_file} and {r.review_file}")
    typer.echo(f"review: set each \"status\" in {r.review_file} to keep, fixed or reject, then\n"
               f"  openft data synthesize --apply-review {r.review_file} -o final.jsonl")
