"""Small helpers shared by the API tests (datasets, polling)."""

from __future__ import annotations

import io
import json
import random
import time


def chat_jsonl(n: int = 12, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = ["great", "awful", "fine", "superb", "bad", "lovely", "poor", "nice"]
    lines = []
    for i in range(n):
        w = rng.choice(words)
        label = "positive" if w in ("great", "fine", "superb", "lovely", "nice") else "negative"
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": "Classify the review as positive or negative."},
            {"role": "user", "content": f"Review {i}: the product was {w}."},
            {"role": "assistant", "content": label}]}))
    return ("\n".join(lines) + "\n").encode()


def upload(client, data: bytes, name: str = "train.jsonl", purpose: str = "fine-tune"):
    return client.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def wait_status(client, job_id: str, statuses: set[str], timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stayed {job.status!r}, wanted {statuses}: {job.error}")
        time.sleep(0.2)
