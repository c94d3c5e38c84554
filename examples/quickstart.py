"""openft end to end, with nothing but the official `openai` SDK against a local openft server.

    python examples/quickstart.py            # or scripts/quickstart.sh, which installs everything first

1. starts `openft serve` in a temporary data folder on a free port,
2. uploads the example dataset (short reviews labelled positive/negative, examples/data/),
3. fine-tunes smollm2-135m-instruct (LoRA) for a short run, printing the job's events,
4. asks the base model and the fine-tuned model the same held-back reviews and prints both
   answers side by side with the expected label and each model's accuracy,
5. stops the server.

Converted base weights are kept in ~/.cache/openft/models (or $OPENFT_MODEL_CACHE_DIR), so only
the first run pays for the GGUF conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import APIConnectionError, OpenAI

DATA = Path(__file__).resolve().parent / "data"
TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, key: str, model_cache: Path, model: str) -> subprocess.Popen:
    env = {**os.environ, "OPENFT_API_KEY": key, "OPENFT_MODEL_CACHE_DIR": str(model_cache),
           "OPENFT_PRELOAD_MODELS": model,  # loaded in the background while the job trains
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(data_dir.parent / "server.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "openft", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until_up(client: OpenAI, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client.models.list()
            return
        except APIConnectionError:
            time.sleep(0.3)
    sys.exit(f"the server did not answer within {timeout:.0f} s; see {log}")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def print_new_events(client: OpenAI, job_id: str, seen: set[str]) -> None:
    """Prints events not seen yet, oldest first; of the per-step metrics, about ten lines."""
    new = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=100):  # newest first, pages on
        if event.id in seen:
            break
        new.append(event)
    for event in reversed(new):
        seen.add(event.id)
        data = event.data if isinstance(event.data, dict) else {}
        step, total = data.get("step"), data.get("total_steps")
        if event.type == "metrics" and step and total and step not in (1, total) and step % max(1, total // 10):
            continue
        print(f"  [{time.strftime('%H:%M:%S', time.localtime(event.created_at))}] {event.message}", flush=True)


def upload(client: OpenAI, path: Path, n_examples: int, work: Path):
    """Uploads the first n_examples lines of a JSONL file."""
    lines = path.read_text().splitlines(keepends=True)[:n_examples]
    part = work / path.name
    part.write_text("".join(lines))
    with open(part, "rb") as fh:
        return client.files.create(file=fh, purpose="fine-tune")


def label_of(answer: str) -> str | None:
    """The first of positive/negative the answer mentions."""
    text = answer.lower()
    found = [(text.find(w), w) for w in ("positive", "negative") if w in text]
    return min(found)[1] if found else None


def ask(client: OpenAI, model: str, system: str, review: str) -> str:
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": review}],
        temperature=0, max_tokens=8, seed=0)
    return (resp.choices[0].message.content or "").strip().replace("\n", " ")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="base model to fine-tune")
    p.add_argument("--n-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate-multiplier", type=float, default=0.5)
    p.add_argument("--train-examples", type=int, default=80, help="train on the first N of the 240 examples")
    p.add_argument("--valid-examples", type=int, default=16, help="validate on the first N of the 40 examples")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = p.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the server (finally below)
    t_start = time.time()
    model_cache = Path(os.environ.get("OPENFT_MODEL_CACHE_DIR") or Path.home() / ".cache" / "openft" / "models")
    work = Path(tempfile.mkdtemp(prefix="openft-quickstart-"))
    data_dir, port, key = work / "data", free_port(), "sk-quickstart-" + secrets.token_hex(16)
    data_dir.mkdir()
    print(f"Starting openft serve on port {port} (data: {data_dir}; log: {work / 'server.log'})", flush=True)
    server = start_server(data_dir, port, key, model_cache, args.model)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=2, timeout=600)
        wait_until_up(client, server, work / "server.log")
        print(f"Server up after {time.time() - t_start:.1f} s\n", flush=True)

        train = upload(client, DATA / "sentiment_train.jsonl", args.train_examples, work)
        valid = upload(client, DATA / "sentiment_valid.jsonl", args.valid_examples, work)
        print(f"Uploaded {args.train_examples} training examples as {train.id} and {args.valid_examples} "
              f"validation examples as {valid.id}", flush=True)

        job = client.fine_tuning.jobs.create(
            training_file=train.id, validation_file=valid.id, model=args.model, suffix="reviews", seed=42,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": args.n_epochs, "batch_size": args.batch_size,
                "learning_rate_multiplier": args.learning_rate_multiplier}}})
        print(f"Created fine-tuning job {job.id}; events:", flush=True)
        t_job, seen = time.time(), set()
        while True:
            job = client.fine_tuning.jobs.retrieve(job.id)
            print_new_events(client, job.id, seen)
            if job.status in TERMINAL:
                break
            time.sleep(1.0)
        print(f"Job {job.status} after {time.time() - t_job:.0f} s; hyperparameters: "
              f"{json.dumps(job.method.supervised.hyperparameters.model_dump(exclude_none=True))}\n", flush=True)
        if job.status != "succeeded":
            print(f"error: {job.error.message if job.error else job.status}", file=sys.stderr)
            return 1

        questions = [json.loads(line) for line in (DATA / "sentiment_questions.jsonl").read_text().splitlines()]
        tuned = job.fine_tuned_model
        print(f"Base model: {args.model}\nFine-tuned: {tuned}\n", flush=True)
        header = f"{'review':<48} {'expected':<9} {'base model says':<26} {'fine-tuned says':<16}"
        print(header + "\n" + "-" * len(header))
        score = {"base": 0, "tuned": 0}
        with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent requests: the server batches them
            answers = list(pool.map(lambda a: ask(client, a[0], a[1]["system"], a[1]["review"]),
                                    [(m, q) for q in questions for m in (args.model, tuned)]))
        for i, q in enumerate(questions):
            base_answer, tuned_answer = answers[2 * i], answers[2 * i + 1]
            score["base"] += label_of(base_answer) == q["expected"]
            score["tuned"] += label_of(tuned_answer) == q["expected"]
            review = textwrap.shorten(q["review"], 47, placeholder="...")
            print(f"{review:<48} {q['expected']:<9} {textwrap.shorten(base_answer, 25, placeholder='...') or '(empty)':<26} "
                  f"{textwrap.shorten(tuned_answer, 25, placeholder='...') or '(empty)':<16}", flush=True)
        n = len(questions)
        print(f"\nAccuracy on {n} held-back reviews: base {score['base']}/{n}, fine-tuned {score['tuned']}/{n}")
        print(f"Total time: {time.time() - t_start:.0f} s")
        return 0
    finally:
        stop_server(server)
        if args.keep:
            print(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
