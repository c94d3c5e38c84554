"""Helpers for the data toolkit tests (a uniquely named module: every test folder has a conftest)."""

from __future__ import annotations

import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_jsonl(path: Path, rows, *, raw_lines: list[str] | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
        for line in raw_lines or []:
            f.write(line + "\n")
    return path


def chat(i: int, answer: str = "positive") -> dict:
    return {"messages": [{"role": "system", "content": "Classify the review."},
                         {"role": "user", "content": f"Review number {i}: it was fine."},
                         {"role": "assistant", "content": answer}]}
