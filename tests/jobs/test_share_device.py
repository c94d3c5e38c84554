"""One card, two users: a server (API + embedded worker, in this process so that the test can see
its engines) that chatted and ran an eval has its engines give back their caches when the worker
claims a training job; a release that fails neither stops the job nor the server; chat goes on.
On CUDA (marked gpu), the process's reserved GPU memory drops when the job is claimed."""

from __future__ import annotations

import pytest

from tests.support.data import write_chat_jsonl
from tests.support.wait import wait_eval_run, wait_job, wait_until

MESSAGES = [{"role": "user", "content": "Say something about the sea."}]


def chat(client, **kw) -> str:
    r = client.chat.completions.create(model="openft-tiny", messages=MESSAGES, max_tokens=8, **kw)
    assert r.choices[0].finish_reason in ("stop", "length")
    return r.choices[0].message.content


def start_job(client, tmp_path):
    f = client.files.create(file=write_chat_jsonl(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}})


def released(srv, job_id: str, engines: set[str]) -> dict:
    """The worker's release records of `job_id`, by engine, once every engine in `engines` has one."""
    got = {r["engine"]: r for r in list(srv.worker.worker.releases) if r["job"] == job_id}
    return got if engines <= set(got) else {}


def wait_succeeded(client, job_id: str):
    job = wait_job(client, job_id)
    assert job.status == "succeeded", job.error
    return job


def run_eval(client) -> None:
    ev = client.evals.create(name="share", data_source_config={
        "type": "custom", "item_schema": {"type": "object", "properties": {"text": {"type": "string"}},
                                          "required": ["text"]}, "include_sample_schema": True},
        testing_criteria=[{"type": "string_check", "name": "any", "input": "{{sample.output_text}}",
                           "reference": "x", "operation": "ne"}])
    run = client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": "openft-tiny",
        "source": {"type": "file_content", "content": [{"item": {"text": t}} for t in ("good", "bad")]},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.text}}"}]},
        "sampling_params": {"max_completion_tokens": 4, "temperature": 0, "seed": 1}})
    run = wait_eval_run(client, ev.id, run.id, timeout=120)
    assert run.status == "completed", run.error


def test_a_claimed_job_makes_the_chat_and_eval_engines_give_back_their_caches(thread_server, tmp_path):
    run_eval(thread_server.client)                      # the worker's eval engine loads and caches
    assert chat(thread_server.client)                   # the API's chat engine loads, KV cache allocated
    engine = thread_server.app.state.openft.engine_if_started()
    assert engine is not None
    job = start_job(thread_server.client, tmp_path)
    got = wait_until(lambda: released(thread_server, job.id, {"serving", "eval"}), what="the engines' releases")
    assert got["serving"]["bytes"] > 0 and got["eval"]["bytes"] > 0, got
    assert engine.release_memory()["bytes"] == 0  # nothing was left cached: the claim gave it all back
    assert chat(thread_server.client)                   # the engine rebuilds its cache on demand
    wait_succeeded(thread_server.client, job.id)
    assert chat(thread_server.client)


def test_a_failing_release_neither_stops_the_job_nor_the_server(thread_server, tmp_path, monkeypatch):
    assert chat(thread_server.client)
    engine = thread_server.app.state.openft.engine_if_started()

    def broken():
        raise RuntimeError("the device is gone")

    monkeypatch.setattr(engine, "release_memory", broken)
    job = start_job(thread_server.client, tmp_path)
    got = wait_until(lambda: released(thread_server, job.id, {"serving"}), what="the failed release")
    assert got["serving"]["error"] == "RuntimeError: the device is gone"
    wait_succeeded(thread_server.client, job.id)
    assert chat(thread_server.client)


@pytest.mark.gpu
def test_on_cuda_the_reserved_memory_drops_when_a_job_is_claimed(thread_server, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    # 64 sequences of up to ~300 tokens: a KV cache over 10 MiB, so that the caching allocator gives
    # it a segment of its own (smaller blocks share 20 MiB segments, which may hold live weights)
    r = thread_server.client.chat.completions.create(model="openft-tiny", messages=MESSAGES, max_tokens=300, n=64,
                                              temperature=1.0, seed=0)
    assert len(r.choices) == 64
    assert thread_server.app.state.openft.engine_if_started().device == "cuda"
    before = torch.cuda.memory_reserved()
    job = start_job(thread_server.client, tmp_path)
    got = wait_until(lambda: released(thread_server, job.id, {"serving"}), what="the engine's release")
    after = torch.cuda.memory_reserved()
    assert got["serving"]["bytes"] > 0 and after < before, (before, after, got)
    wait_succeeded(thread_server.client, job.id)
    assert chat(thread_server.client)
