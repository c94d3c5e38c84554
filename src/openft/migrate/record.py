"""Record a source model's behaviour as a chat training file: ask it each prompt, keep its answers.

`read_prompts(path)` takes JSONL records (chat `{"messages": [...]}`, a bare list of messages,
prompt/completion, evals or preference records: any trailing assistant answer is dropped, the
model answers instead) or plain text lines (one user message each). `record(...)` asks the source
model every prompt not answered yet with at most `concurrency` requests in flight (the SDK
retries 429s after the server's Retry-After) and appends one line per answer to the output,
`{"messages": [...prompt, {"role": "assistant", "content": answer}]}`: a chat example openft's
validator accepts as it is.

Resumable: a prompt is answered when the output holds a line whose prompt messages hash the same
(each occurrence of a repeated prompt counts once); a half-written last line (an interrupted run)
is cut off before anything is appended.

Knows the `openai` SDK and openft.data's formats; nothing about the CLI or the server.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.data import formats as F
from openft.data.reader import iter_lines, parse_record
from openft.migrate.faults import MigrateError, describe, is_fatal


@dataclass
class RecordResult:
    total: int = 0
    already: int = 0
    answered: int = 0
    failed: list[str] = field(default_factory=list)   # one line per prompt that got no answer
    stopped: str | None = None                        # why the run stopped early (a fatal fault)


def prompt_key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _message(m: dict) -> dict:
    """A message as sent: its content as text (parts joined), training-only keys (weight) dropped."""
    out = {k: v for k, v in m.items() if k != "weight"}
    text = F.content_text(out.get("content"))
    if text is not None:
        out["content"] = text
    return out


def _as_prompt(record: Any) -> list[dict] | None:
    """The messages to send for one parsed record (its trailing assistant messages dropped)."""
    if isinstance(record, list):
        record = {"messages": record}
    fmt = F.detect(record)
    if fmt is None:
        return None
    if fmt == F.CHAT:
        if any(issue[3] == F.ERROR for issue in F.check_messages(record.get("messages"), "messages",
                                                                 need_assistant=False)):
            return None
        messages = [_message(m) for m in record["messages"]]
    elif fmt == F.PROMPT_COMPLETION:
        if not isinstance(record.get("prompt"), str):
            return None
        messages = [{"role": "user", "content": record["prompt"]}]
    elif fmt == F.EVALS:
        messages = [_message(m) for m in record.get("input") or [] if isinstance(m, dict)]
    else:  # preference
        messages = [_message(m) for m in (record.get("input") or {}).get("messages") or [] if isinstance(m, dict)]
    while messages and messages[-1].get("role") == "assistant":
        messages.pop()
    return messages if messages and messages[-1].get("role") in ("user", "tool", "system") else None


def read_prompts(path: str | Path) -> list[list[dict]]:
    """The prompts of a JSONL or plain-text file, in order; a line that is neither is an error."""
    out: list[list[dict]] = []
    for line, text, problem in iter_lines(path):
        if problem is not None:
            raise MigrateError(f"{path}:{line}: {problem[1]}")
        if not text.strip():
            continue
        record, bad = parse_record(text)
        if bad is None and isinstance(record, (dict, list)):
            messages = _as_prompt(record)
            if messages is None:
                raise MigrateError(f"{path}:{line}: not a prompt: expected chat messages (ending in a user message), "
                                   "a prompt/completion or evals record, or a plain text line")
        else:
            messages = [{"role": "user", "content": text}]
        out.append(messages)
    return out


def answered_counts(out: Path) -> Counter:
    """Prompt key -> how many answers the output holds; cuts off a half-written last line."""
    done: Counter = Counter()
    if not out.exists():
        return done
    with open(out, "rb+") as f:
        data_end = 0
        for raw in iter(f.readline, b""):
            if not raw.endswith(b"\n"):
                break   # the last line of an interrupted run: dropped below
            data_end += len(raw)
            try:
                messages = json.loads(raw)["messages"]
            except (ValueError, KeyError, TypeError):
                raise MigrateError(f"{out}: a line that is not one of ours ({raw[:60]!r}); "
                                   "choose another output file") from None
            if messages and messages[-1].get("role") == "assistant":
                done[prompt_key(messages[:-1])] += 1
        f.truncate(data_end)
    return done


def record(client, model: str, prompts: list[list[dict]], out: str | Path, *, concurrency: int = 4,
           params: dict | None = None, source_url: str = "", progress: Callable[[int], None] | None = None
           ) -> RecordResult:
    """Ask `model` every prompt not yet answered in `out` and append the answers.

    progress(n) is called with the number of prompts done (answered, failed or already) so far.
    """
    import openai

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = RecordResult(total=len(prompts))
    have = answered_counts(out)
    todo: list[tuple[int, list[dict]]] = []
    for i, messages in enumerate(prompts):
        key = prompt_key(messages)
        if have[key] > 0:
            have[key] -= 1
            res.already += 1
        else:
            todo.append((i, messages))
    if progress:
        progress(res.already)
    stop = threading.Event()

    def ask(i: int, messages: list[dict]) -> str | None:
        if stop.is_set():
            return None
        reply = client.chat.completions.create(model=model, messages=messages, **(params or {}))
        return reply.choices[0].message.content or ""

    def handle(i: int, messages: list[dict], fut) -> None:
        try:
            answer = fut.result()
        except openai.NotFoundError as e:
            stop.set()
            res.stopped = f"the source model {model} does not exist (any more): {describe(e, 'source', source_url)}"
            return
        except Exception as e:  # noqa: BLE001 - one line per prompt; the others go on
            if is_fatal(e):
                stop.set()
                res.stopped = describe(e, "source", source_url)
            else:
                res.failed.append(f"prompt {i + 1}: {describe(e, 'source', source_url)}")
            return
        if answer is None:   # not asked: the run stopped
            return
        if not answer.strip():
            res.failed.append(f"prompt {i + 1}: the model answered nothing")
            return
        line = json.dumps({"messages": [*messages, {"role": "assistant", "content": answer}]}, ensure_ascii=False)
        fh.write(line + "\n")
        fh.flush()
        res.answered += 1

    with open(out, "a", encoding="utf-8") as fh, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: dict = {}
        queue = iter(todo)

        def submit_next() -> None:
            for i, messages in queue:
                pending[pool.submit(ask, i, messages)] = (i, messages)
                return

        for _ in range(max(1, concurrency)):
            submit_next()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                i, messages = pending.pop(fut)
                handle(i, messages, fut)
                if progress:
                    progress(res.already + res.answered + len(res.failed))
                if not stop.is_set():
                    submit_next()
            if stop.is_set():
                for fut in [f for f in pending if f.cancel()]:
                    pending.pop(fut)
    return res
