"""Tool-call accuracy: does fine-tuning on ~100 function-calling lines teach the default model to call tools?

Through the official `openai` SDK against a local `openft serve` (temporary data folder): generates
the training lines and held-out requests with `openft.data.tool_examples` (four functions, test
requests in phrasings the training lines never use), fine-tunes the model (LoRA), then sends each
held-out request with `tools` (tool_choice "auto", no parallel calls, greedy) to the base model and
to the fine-tuned one and scores the answers side by side:

- called: the answer holds a tool call;
- right function: the first call names the expected function;
- valid arguments: ... and its arguments are valid against the function's JSON schema;
- exact arguments: ... and they equal the expected ones.

    HF_HUB_OFFLINE=1 python benchmarks/tool_calls.py                       # 100 lines, 3 epochs, 40 held out
    HF_HUB_OFFLINE=1 python benchmarks/tool_calls.py --n-epochs 1 --test 20  # a quicker run

The model is `smollm2-135m-instruct` unless `--model` says otherwise; its template has no tool
format, so openft's default (Hermes/Qwen) format is what it is trained on and parsed with.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from quickstart import free_port, start_server, stop_server, wait_until_up  # noqa: E402

METRICS = ("called", "right function", "valid arguments", "exact arguments")


def valid_against(schema: dict, value) -> bool:
    """`value` against the JSON-schema subset the generated tools use (type, enum, properties,
    required, additionalProperties, minimum, maximum)."""
    types = {"object": dict, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    t = schema.get("type")
    if t is not None and (not isinstance(value, types[t]) or (t in ("integer", "number") and isinstance(value, bool))):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
        return False
    if t == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return False
        return all(valid_against(props[k], v) for k, v in value.items() if k in props)
    return True


def score(line: dict, message, tools: list) -> dict:
    """The metrics (booleans) of one answer to one held-out line."""
    want = line["messages"][1]["tool_calls"][0]["function"]
    calls = message.tool_calls or []
    out = dict.fromkeys(METRICS, False)
    if not calls:
        return out
    out["called"] = True
    f = calls[0].function
    if f.name != want["name"]:
        return out
    out["right function"] = True
    try:
        args = json.loads(f.arguments)
    except ValueError:
        return out
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == f.name)
    out["valid arguments"] = isinstance(args, dict) and valid_against(schema, args)
    out["exact arguments"] = out["valid arguments"] and args == json.loads(want["arguments"])
    return out


def shown(message) -> str:
    if message.tool_calls:
        f = message.tool_calls[0].function
        return f"{f.name}({f.arguments})"
    return "text: " + (message.content or "").replace("\n", " ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train", type=int, default=100, help="training lines (default 100)")
    ap.add_argument("--test", type=int, default=40, help="held-out requests (default 40)")
    ap.add_argument("--n-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--learning-rate-multiplier", type=float, default=1.0)
    ap.add_argument("--show", type=int, default=8, help="held-out answers printed side by side")
    a = ap.parse_args()
    from openai import OpenAI

    from openft.data.tool_examples import TOOLS, examples, write_jsonl

    t0 = time.time()
    model_cache = Path(os.environ.get("OPENFT_MODEL_CACHE_DIR") or Path.home() / ".cache" / "openft" / "models")
    work = Path(tempfile.mkdtemp(prefix="openft-tools-bench-"))
    data_dir, port, key = work / "data", free_port(), "sk-bench-" + secrets.token_hex(16)
    data_dir.mkdir()
    server = start_server(data_dir, port, key, model_cache)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=2, timeout=900)
        wait_until_up(client, server, work / "server.log")
        train, test = examples(a.train, split="train"), examples(a.test, split="test", with_results=False)
        with open(write_jsonl(work / "tools_train.jsonl", train), "rb") as fh:
            f = client.files.create(file=fh, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=a.model, training_file=f.id, suffix="tools", seed=0, method={
            "type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": a.n_epochs, "batch_size": a.batch_size,
                "learning_rate_multiplier": a.learning_rate_multiplier}}})
        t_job = time.time()
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
        train_s = time.time() - t_job
        if job.status != "succeeded":
            print(f"error: the job {job.status}: {job.error.message if job.error else ''}\n"
                  f"{(work / 'server.log').read_text()[-3000:]}", file=sys.stderr)
            return 1
        tuned = job.fine_tuned_model

        def ask(model: str, line: dict):
            return client.chat.completions.create(model=model, messages=line["messages"][:1], tools=TOOLS,
                                                  parallel_tool_calls=False, temperature=0, max_tokens=80,
                                                  seed=0).choices[0].message

        with ThreadPoolExecutor(max_workers=8) as pool:  # the server batches concurrent requests
            answers = list(pool.map(lambda mq: ask(*mq), [(m, q) for q in test for m in (a.model, tuned)]))
        totals = {m: dict.fromkeys(METRICS, 0) for m in ("base", "tuned")}
        print(f"{'request':<46} {'base model':<40} fine-tuned")
        for i, q in enumerate(test):
            base, ft = answers[2 * i], answers[2 * i + 1]
            for name, msg in (("base", base), ("tuned", ft)):
                for k, v in score(q, msg, TOOLS).items():
                    totals[name][k] += v
            if i < a.show:
                print(f"{q['messages'][0]['content'][:45]:<46} {shown(base)[:39]:<40} {shown(ft)[:60]}")
        n = len(test)
        print(f"\n{'held-out requests: ' + str(n):<22} {'base':>8} {'fine-tuned':>11}")
        for k in METRICS:
            print(f"{k:<22} {totals['base'][k] / n:>8.0%} {totals['tuned'][k] / n:>11.0%}")
        print(json.dumps({"model": a.model, "train": a.train, "test": n, "n_epochs": a.n_epochs,
                          "batch_size": a.batch_size, "learning_rate_multiplier": a.learning_rate_multiplier,
                          "train_seconds": round(train_s), "total_seconds": round(time.time() - t0),
                          "base": {k: round(v / n, 3) for k, v in totals["base"].items()},
                          "fine_tuned": {k: round(v / n, 3) for k, v in totals["tuned"].items()}}))
        return 0
    finally:
        stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
