"""Question/answer pairs from documents, with any OpenAI-compatible chat model, and a review step.

1. `read_document` turns text, Markdown or HTML into plain text; `chunk_text` cuts it into
   passages at paragraph boundaries.
2. For each passage the model is asked for questions the passage answers (`parse_questions`
   reads numbered lists, bullets, JSON arrays or plain lines), then, for each question, for an
   answer grounded in the passage only (`clean_answer`; "NOT IN DOCUMENT" answers are dropped).
3. The pairs are written as chat JSONL, plus a review file (JSONL, one pair per line with
   `"status": "pending"`): a person sets each status to `keep`, `fixed` (after editing the
   question or answer) or `reject`; `apply_review` writes the final training file.

The model is reached through the official `openai` SDK (`base_url`, `api_key`), so this works
with openft's own server, vLLM, Ollama or OpenAI. Knows nothing about the CLI or tokenizers.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from openft.data.reader import iter_records
from openft.errors import DataError, InvalidRequest

NOT_IN_DOC = "NOT IN DOCUMENT"
QUESTION_PROMPT = (
    "Here is a passage from the document {name!r}:\n\n<<<\n{passage}\n>>>\n\n"
    "Write {n} different questions that a reader could ask and that this passage answers. "
    "Each question must make sense without seeing the passage. One question per line, numbered 1., 2., ...")
ANSWER_SYSTEM = ("You answer questions using only the passage you are given. Answer in one to three sentences. "
                 f"If the passage does not contain the answer, reply exactly: {NOT_IN_DOC}")
ANSWER_PROMPT = "Passage from {name!r}:\n\n<<<\n{passage}\n>>>\n\nQuestion: {question}"
STATUSES = {"keep": "keep", "kept": "keep", "ok": "keep", "fixed": "fixed", "fix": "fixed",
            "reject": "reject", "rejected": "reject", "pending": "pending"}


class _Text(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre",
             "blockquote", "ul", "ol", "table", "header", "footer"}
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    p = _Text()
    p.feed(html)
    p.close()
    text = "".join(p.parts)
    paras = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return "\n\n".join(x for x in paras if x)


def read_document(path: str | Path) -> str:
    """Plain text of a .txt, .md or .html file (UTF-8; a byte-order mark is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file", param="docs")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("a binary file, not a text, Markdown or HTML document", file=str(path), code="invalid_encoding")
    try:
        text = raw.decode("utf-16") if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})", file=str(path),
                        code="invalid_encoding") from None
    if path.suffix.lower() in (".html", ".htm", ".xhtml") or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        text = html_to_text(text)
    return text.replace("\r\n", "\n").strip()


def chunk_text(text: str, max_chars: int = 3000) -> list[str]:
    """Passages of at most ~max_chars, cut at paragraph (then sentence) boundaries."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for p in paras:
        while len(p) > max_chars:
            cut = p.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 3 else max_chars
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            pieces.append(p)
    chunks: list[str] = []
    for p in pieces:
        if chunks and len(chunks[-1]) + 2 + len(p) <= max_chars:
            chunks[-1] += "\n\n" + p
        else:
            chunks.append(p)
    return chunks


_ITEM = re.compile(r"^\s*(?:(?:q(?:uestion)?\s*)?\d{1,3}\s*[.):\-]|[-*\u2022]|#{1,6})\s*(.+)$", re.I)


def _strip_thinking(text: str) -> str:
    return re.sub(r"<think>.*?(</think>|$)", "", text, flags=re.S | re.I).strip()


def parse_questions(text: str, limit: int = 10) -> list[str]:
    """Questions out of a model's reply: a JSON array, a numbered or bulleted list, or lines."""
    text = _strip_thinking(text)
    found: list[str] = []
    m = re.search(r"\[.*\]", text, re.S)
    if m:
        try:
            arr = json.loads(m.group(0))
            found = [x if isinstance(x, str) else x.get("question", "") for x in arr if isinstance(x, (str, dict))]
        except (json.JSONDecodeError, AttributeError):
            found = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not found:
        items = [_ITEM.match(ln) for ln in lines]
        found = [mm.group(1) for mm in items if mm]
    if not found:
        found = [ln for ln in lines if ln.endswith("?")] or lines
    out: list[str] = []
    seen: set[str] = set()
    for q in found:
        q = re.sub(r"^\*\*|\*\*$", "", q.strip()).strip().strip('"').strip()
        q = re.sub(r"^(?:q(?:uestion)?\s*\d*\s*[:.)-])\s*", "", q, flags=re.I).strip()
        if len(q) < 8 or len(q) > 400 or q.lower().startswith(("here are", "sure", "certainly")):
            continue
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append(q)
    return out[:limit]


def clean_answer(text: str) -> str | None:
    """The answer text, or None when the model says the passage does not hold it (or said nothing)."""
    text = _strip_thinking(text or "")
    text = re.sub(r"^\s*(?:a(?:nswer)?\s*[:.)-])\s*", "", text, flags=re.I).strip()
    if not text or NOT_IN_DOC.lower() in text.lower()[: len(NOT_IN_DOC) + 20]:
        return None
    return text


@dataclass
class SynthesisResult:
    out_file: str
    review_file: str
    n_documents: int = 0
    n_chunks: int = 0
    n_questions: int = 0
    n_pairs: int = 0
    n_unanswered: int = 0
    n_failed_calls: int = 0
    errors: list[str] = field(default_factory=list)


def review_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.review.jsonl")


def synthesize(docs: list[str | Path], out: str | Path, *, client: Any, model: str, questions_per_chunk: int = 5,
               chunk_chars: int = 3000, system: str | None = None, with_context: bool = False,
               temperature: float = 0.7, max_tokens: int = 512, seed: int | None = 0,
               progress: Callable[[str], None] | None = None) -> SynthesisResult:
    """Ask `model` (through an `openai.OpenAI` client) for Q&A pairs; write OUT and OUT.review.jsonl."""
    import openai

    out = Path(out)
    res = SynthesisResult(str(out), str(review_path(out)))
    texts = [(Path(d), read_document(d)) for d in docs]  # read all first: a bad path fails before any call

    def ask(messages: list[dict]) -> str | None:
        try:
            r = client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                               max_tokens=max_tokens, seed=seed)
        except openai.APIConnectionError as e:
            raise InvalidRequest(f"cannot reach the model server at {client.base_url}: {e}", param="base_url") from None
        except (openai.AuthenticationError, openai.NotFoundError, openai.BadRequestError) as e:
            raise InvalidRequest(f"the model server refused the request: {e.message}", param="model") from None
        except openai.APIError as e:
            res.n_failed_calls += 1
            res.errors.append(str(e))
            return None
        return r.choices[0].message.content or ""

    pairs = []
    for path, text in texts:
        res.n_documents += 1
        for ci, passage in enumerate(chunk_text(text, chunk_chars)):
            res.n_chunks += 1
            if progress:
                progress(f"{path.name} passage {ci + 1}: asking for questions")
            reply = ask([{"role": "user", "content": QUESTION_PROMPT.format(name=path.name, passage=passage,
                                                                              n=questions_per_chunk)}])
            questions = parse_questions(reply or "", questions_per_chunk)
            res.n_questions += len(questions)
            for q in questions:
                answer = ask([{"role": "system", "content": ANSWER_SYSTEM},
                              {"role": "user", "content": ANSWER_PROMPT.format(name=path.name, passage=passage,
                                                                               question=q)}])
                answer = clean_answer(answer) if answer is not None else None
                if answer is None:
                    res.n_unanswered += 1
                    continue
                pairs.append({"id": len(pairs) + 1, "status": "pending", "question": q, "answer": answer,
                              "source": f"{path.name}#passage-{ci + 1}", "passage": passage[:2000]})
    settings = {"system": system, "with_context": with_context}
    _write_jsonl(review_path(out), [{"_review": "set status to keep, fixed (after editing question/answer) or "
                                     "reject; then: openft data synthesize --apply-review THIS_FILE -o FINAL.jsonl",
                                     **settings}] + pairs)
    _write_jsonl(out, [pair_to_example(p, system=system, with_context=with_context) for p in pairs])
    res.n_pairs = len(pairs)
    return res


def pair_to_example(pair: dict, *, system: str | None = None, with_context: bool = False) -> dict:
    user = pair["question"] if not with_context else f"{pair['passage']}\n\nQuestion: {pair['question']}"
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": pair["answer"]}]
    return {"messages": msgs}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def apply_review(review: str | Path, out: str | Path) -> Counter:
    """Write the kept and fixed pairs of a review file as chat JSONL; counts per status."""
    review = Path(review)
    if not review.is_file():
        raise InvalidRequest(f"{review}: no such file", param="apply_review")
    settings: dict = {}
    counts: Counter = Counter()
    rows = []
    for n, _text, row in iter_records(review):  # the one JSONL reader (byte-order mark, bad bytes)
        if not isinstance(row, dict):
            raise DataError("each line must be an object", file=str(review), line=n, code="data_type")
        if "_review" in row:
            settings = {k: row.get(k) for k in ("system", "with_context")}
            continue
        status = STATUSES.get(str(row.get("status", "")).strip().lower())
        if status is None:
            raise DataError(f"status {row.get('status')!r} must be keep, fixed, reject or pending",
                            file=str(review), line=n, field="status", code="invalid_status")
        counts[status] += 1
        if status in ("keep", "fixed"):
            for k in ("question", "answer"):
                if not isinstance(row.get(k), str) or not row[k].strip():
                    raise DataError(f"{k} is empty", file=str(review), line=n, field=k, code="missing_content")
            rows.append(pair_to_example(row, system=settings.get("system"),
                                        with_context=bool(settings.get("with_context"))))
    _write_jsonl(Path(out), rows)
    counts["written"] = len(rows)
    return counts
