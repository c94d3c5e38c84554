"""`openft data` commands end to end (in-process CLI runner; the real library and tiny model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from openft.data.reader import table_kind
from tests.support.data import chat, write_jsonl


def test_validate_human_report(tmp_path, run_data):
    rows = [chat(i, "positive" if i % 2 else "negative") for i in range(20)] + [chat(0, "negative")]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    code, out, err = run_data("validate", p, "-m", "openft-tiny", "--max-seq-len", "25")
    assert code == 0, out + err
    assert out.startswith(f"{p}: chat, 21 examples: OK (0 errors, ")
    assert f"{p}:21: same example as line 1  [duplicate_example]" in out
    assert "over the 25-token context: it will be truncated" in out
    assert "tokens/example" in out and "trained tokens/example" in out and "epochs (auto): 5" in out
    assert "time on this machine:" in out
    code, out, _ = run_data("validate", p)
    assert code == 0 and "add -m MODEL for token statistics" in out


def test_validate_times_with_the_local_data_folders_jobs(tmp_path, run_data, monkeypatch):
    """The time estimate comes from earlier jobs of the model in the local data folder, else none."""
    from openft.config import Settings
    from openft.data.estimate import write_pace
    from openft.store.db import jobs, make_engine, migrate, next_seq

    p = write_jsonl(tmp_path / "train.jsonl", [chat(i, "positive" if i % 2 else "negative") for i in range(20)])
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path / "data"))
    code, out, _ = run_data("validate", p, "-m", "openft-tiny")
    assert code == 0 and "time on this machine: unknown (no pace measured" in out
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    write_pace(tmp_path, base_model="openft-tiny", method="lora", device="cpu", setup_seconds=5.0, steps=9,
               processed_tokens=1000, seconds=10.0)
    with engine.begin() as conn:
        conn.execute(jobs.insert().values(
            id="ftjob-x", project_id="p", seq=next_seq(conn, jobs), model="openft-tiny", base_model="openft-tiny",
            status="succeeded", created_at=1, finished_at=2, training_file="file-x", result_files=[], seed=1,
            attempts=1, output_dir=str(tmp_path), method={"type": "supervised"}))
    engine.dispose()
    code, out, _ = run_data("validate", p, "-m", "openft-tiny")
    assert code == 0 and "at 100 tokens/s (from 1 earlier job of openft-tiny)" in out, out


def test_validate_json_and_exit_status(tmp_path, run_data):
    rows = [chat(i) for i in range(12)]
    rows[2]["messages"][2]["role"] = "gpt"
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    code, out, _ = run_data("validate", p, "--json", "-m", "openft-tiny")
    assert code == 1
    rep = json.loads(out)
    assert rep["ok"] is False and rep["errors"][0] == {
        "code": "unrecognized_role", "line": 3, "field": "messages[2].role",
        "message": "role 'gpt' is not one of system, user, assistant, tool, function"}
    assert rep["stats"]["n_valid_examples"] == 11 and rep["stats"]["estimate"]["n_epochs"] == 10
    code, out, _ = run_data("validate", p)
    assert code == 1 and "FAILED (2 errors, 0 warnings)" in out
    assert f"{p}:3 [messages[2].role]: role 'gpt' is not one of" in out


def test_inspect_shows_the_trained_tokens(tmp_path, run_data):
    p = write_jsonl(tmp_path / "i.jsonl", [chat(1), chat(2, "negative"), {"prompt": "x"}])
    code, out, err = run_data("inspect", p, "-m", "openft-tiny", "--no-color", "--line", "2")
    assert code == 0, out + err
    assert out.startswith(f"== {p}:2 (chat)\n")
    assert "<|im_start|>assistant\n[[negative<|im_end|>]]" in out
    assert "tokens, 2 trained" in out
    code, out, err = run_data("inspect", p, "-m", "openft-tiny", "--line", "3")
    assert code == 1 and err.strip() == f"error: {p}:3 [completion]: no 'completion'"
    code, out, err = run_data("inspect", p, "-m", "no-such-model", "--line", "3")
    assert code == 1 and err.startswith("error: ") and "Traceback" not in out + err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}\n')
    code, out, err = run_data("inspect", bad, "-m", "openft-tiny")
    assert code == 1 and err.startswith(f"error: {bad}:1: invalid JSON") and "Traceback" not in out + err


@pytest.mark.parametrize("name,kind", [("a.CSV", "csv"), ("b.tsv", "tsv"), ("c.xlsx", "xlsx"),
                                       ("d.parquet", "parquet"), ("e.jsonl", None)])
def test_table_kinds(name, kind):
    assert table_kind(name) == kind


def test_every_reference_file_converts_and_validates(tmp_path, run_data, shared_data):
    files = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".jsonl", ".csv", ".tsv", ".xlsx",
                                                                               ".parquet"))
    assert len(files) >= 3
    for src in files:
        out = tmp_path / f"{src.parent.name}-{src.stem}.jsonl"
        code, stdout, stderr = run_data("convert", src, out, "--system", "Answer with the label only.")
        assert code == 0, (src, stdout, stderr)
        code, stdout, stderr = run_data("validate", out, "-m", "openft-tiny")
        assert code == 0, (src, stdout, stderr)


def test_validate_loads_no_sdk_no_torch(tmp_path, tiny_model_dir):
    """`openft data validate -m MODEL` runs on the Rust tokenizer and the chat template alone: the
    openai SDK (imported by `openft chat` at the CLI's import, ~45 MB) and PyTorch stay out of the
    process (its peak RSS on 200 MB had grown from 183 to 487 MB)."""
    import subprocess
    import sys

    from tests.support.data import write_chat_jsonl

    data = write_chat_jsonl(tmp_path / "t.jsonl", 12)
    probe = ("import sys, json\nfrom openft.cli import app\n"
             "try:\n    app(['data', 'validate', sys.argv[1], '-m', sys.argv[2]])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in ('openai', 'torch', 'sqlalchemy') if m in sys.modules)))")
    env = {**os.environ, "OPENFT_DATA_DIR": str(tmp_path / "no-data"),
           "OPENFT_MODEL_CACHE_DIR": str(Path(tiny_model_dir).parent)}
    out = subprocess.run([sys.executable, "-c", probe, str(data), "openft-tiny"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert "OK" in out.stdout, out.stdout + out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout
