"""Synthesize: document reading, reply parsing on real model-style text, review, and a live run
against openft's own server (tiny model) through the official openai SDK."""

from __future__ import annotations

import json

import pytest

from openft.data.synthesize import (
    apply_review,
    chunk_text,
    clean_answer,
    html_to_text,
    parse_questions,
    read_document,
    review_path,
)
from openft.errors import DataError

DOC = """# The Eiffel Tower

The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named
after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.

It was the entrance arch of the 1889 World's Fair. The tower is 330 metres tall, about the height of
an 81-storey building, and was the tallest man-made structure in the world until 1930.

## Visiting

The tower has three levels for visitors, with restaurants on the first and second levels.
"""


def test_read_document_formats(tmp_path):
    md = tmp_path / "a.md"
    md.write_bytes(b"\xef\xbb\xbf" + DOC.encode())
    assert read_document(md).startswith("# The Eiffel Tower")
    html = tmp_path / "a.html"
    html.write_text("<html><head><title>T</title><style>p{color:red}</style></head><body><h1>Eiffel</h1>"
                    "<p>It is 330&nbsp;metres &amp; tall.</p><script>var x=1;</script><ul><li>One</li><li>Two</li>"
                    "</ul></body></html>")
    assert read_document(html) == "Eiffel\n\nIt is 330 metres & tall.\n\nOne\n\nTwo"
    assert html_to_text("<p>a<br>b</p>") == "a\n\nb"
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="binary file"):
        read_document(binary)


def test_chunk_text_respects_paragraphs():
    chunks = chunk_text(DOC, max_chars=300)
    assert all(len(c) <= 300 for c in chunks) and len(chunks) == 2
    assert chunks[0].startswith("# The Eiffel") and chunks[1].startswith("It was the entrance arch")
    assert "".join(chunks).replace("\n", "").replace(" ", "") == DOC.replace("\n", "").replace(" ", "")
    long = "This is a sentence. " * 100
    assert all(len(c) <= 300 for c in chunk_text(long, 300))


@pytest.mark.parametrize("reply,want", [
    ("Here are 3 questions about the passage:\n\n1. Who designed the Eiffel Tower?\n2. When was the tower "
     "built?\n3) How tall is the Eiffel Tower?\n\nLet me know if you need more!",
     ["Who designed the Eiffel Tower?", "When was the tower built?", "How tall is the Eiffel Tower?"]),
    ("- **What event was the tower built for?**\n- **Until what year was it the tallest structure?**",
     ["What event was the tower built for?", "Until what year was it the tallest structure?"]),
    ('```json\n["Where is the Eiffel Tower located?", "Who is it named after?"]\n```',
     ["Where is the Eiffel Tower located?", "Who is it named after?"]),
    ("<think>The passage talks about the tower. I should ask about height.</think>\nQ1: How tall is the tower?\n"
     "Q2: How many visitor levels does it have?",
     ["How tall is the tower?", "How many visitor levels does it have?"]),
    ("Who designed the tower?\nWhat is it made of?\nWho designed the tower?", ["Who designed the tower?",
                                                                               "What is it made of?"]),
    ("", []),
])
def test_parse_questions(reply, want):
    assert parse_questions(reply) == want


def test_clean_answer():
    assert clean_answer("Answer: Gustave Eiffel's company designed it.") == "Gustave Eiffel's company designed it."
    assert clean_answer("NOT IN DOCUMENT") is None
    assert clean_answer("Not in document.") is None
    assert clean_answer("<think>hmm</think>\n330 metres.") == "330 metres."
    assert clean_answer("   ") is None


def test_apply_review(tmp_path):
    review = tmp_path / "qa.review.jsonl"
    rows = [{"_review": "...", "system": "Answer about the Eiffel Tower.", "with_context": False},
            {"id": 1, "status": "keep", "question": "Who designed it?", "answer": "Gustave Eiffel's company."},
            {"id": 2, "status": "fixed", "question": "How tall is it?", "answer": "330 metres."},
            {"id": 3, "status": "rejected", "question": "Bad?", "answer": "Bad."},
            {"id": 4, "status": "pending", "question": "Later?", "answer": "Later."}]
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = apply_review(review, tmp_path / "final.jsonl")
    assert (counts["keep"], counts["fixed"], counts["reject"], counts["pending"], counts["written"]) == (1, 1, 1, 1, 2)
    final = [json.loads(line) for line in open(tmp_path / "final.jsonl")]
    assert final[1] == {"messages": [{"role": "system", "content": "Answer about the Eiffel Tower."},
                                     {"role": "user", "content": "How tall is it?"},
                                     {"role": "assistant", "content": "330 metres."}]}
    rows[2]["status"] = "maybe"
    review.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as e:
        apply_review(review, tmp_path / "final.jsonl")
    assert e.value.line == 3 and e.value.field == "status"


def test_synthesize_errors_are_one_line(tmp_path, run_data):
    code, out, err = run_data("synthesize", tmp_path / "nope.md", "--model", "m", "-o", tmp_path / "o.jsonl")
    assert code == 1 and err.strip() == f"error: {tmp_path / 'nope.md'}: no such file"
    doc = tmp_path / "d.md"
    doc.write_text(DOC)
    code, out, err = run_data("synthesize", doc, "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                              "--api-key", "k", "-o", tmp_path / "o.jsonl")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: cannot reach the model server at")


@pytest.mark.slow
def test_synthesize_with_openft_server(live_server, tmp_path, run_data):
    """The whole loop against `openft serve` with the tiny model (its text is noise, but real)."""
    doc = tmp_path / "eiffel.md"
    doc.write_text(DOC)
    out = tmp_path / "qa.jsonl"
    code, stdout, stderr = run_data("synthesize", doc, "--model", "openft-tiny", "--base-url", live_server.base_url,
                                    "--api-key", live_server.api_key, "-o", out, "--questions", "2",
                                    "--chunk-chars", "300", "--max-tokens", "40", "--system", "Answer briefly.")
    assert code == 0, stdout + stderr
    assert f"wrote {out} and {review_path(out)}" in stdout
    pairs = [json.loads(line) for line in open(review_path(out))][1:]
    examples = [json.loads(line) for line in open(out)]
    assert len(pairs) == len(examples) >= 1
    assert all(p["status"] == "pending" and p["question"] and p["answer"] for p in pairs)
    assert examples[0]["messages"][0] == {"role": "system", "content": "Answer briefly."}
    pairs[0]["status"] = "fixed"
    pairs[0]["answer"] = "Gustave Eiffel's company."
    for p in pairs[1:]:
        p["status"] = "reject"
    review_path(out).write_text("".join(json.dumps(r) + "\n" for r in
                                        [json.loads(open(review_path(out)).readline())] + pairs))
    code, stdout, _ = run_data("synthesize", "--apply-review", review_path(out), "-o", tmp_path / "final.jsonl")
    assert code == 0 and f"{tmp_path / 'final.jsonl'}: 1 examples" in stdout
    final = [json.loads(line) for line in open(tmp_path / "final.jsonl")]
    assert final[0]["messages"][-1] == {"role": "assistant", "content": "Gustave Eiffel's company."}
