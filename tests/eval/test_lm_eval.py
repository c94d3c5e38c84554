"""lm-evaluation-harness, unchanged, against openft's real server: `local-completions` on a
loglikelihood task (token-id prompts, its default, with the model folder's tokenizer) and
`local-chat-completions` on a generate_until task, for a base model and a fine-tuned one (a LoRA
adapter over a base that ends every answer at its first token, as fine-tuned models end their
turn: before openft gave that end token its logprob entry, every loglikelihood came out 0.0).
The tasks read local JSONL (tests/eval/lm_eval_tasks); nothing comes from the hub."""

from __future__ import annotations

import time
from pathlib import Path

import lm_eval
import pytest

from tests.support.models import make_ending_model, register
from tests.support.servers import API, ServerSpec, running
from tests.support.serving import make_adapter

REPO = Path(__file__).resolve().parents[2]
TASKS = Path(__file__).with_name("lm_eval_tasks")
FT_MODEL = "ft:tiny-ends:openft:lmeval:abcd1234"


@pytest.fixture(scope="module")
def srv(tmp_path_factory, model_cache, tiny_model_dir):
    from openft.store.auth import DEFAULT_PROJECT_ID
    from openft.store.db import models

    root = tmp_path_factory.mktemp("lmeval")
    with running(ServerSpec(API, worker=False).server(root / "data", model_cache)) as server:
        register(server.data_dir, "tiny-ends", make_ending_model(tiny_model_dir, root / "ends"))
        adapter = make_adapter(tiny_model_dir, root / "adapter", seed=3)
        db = server.db()
        with db.begin() as conn:   # the row a finished fine-tuning job leaves (training one takes minutes)
            conn.execute(models.insert().values(id=FT_MODEL, project_id=DEFAULT_PROJECT_ID, created_at=int(time.time()),
                                                owned_by="openft", base_model="tiny-ends", job_id=None, method="lora",
                                                path=adapter, deleted=False))
        db.dispose()
        yield server


def _evaluate(srv, kind: str, model: str, task: str, tokenizer: str, monkeypatch, batch_size: int = 1) -> dict:
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(REPO)                          # the tasks' data_files are relative to the repository
    monkeypatch.setenv("OPENAI_API_KEY", srv.api_key)
    path = "completions" if kind == "local-completions" else "chat/completions"
    args = {"model": model, "base_url": f"{srv.base_url}/{path}", "tokenizer_backend": "huggingface",
            "tokenizer": tokenizer, "num_concurrent": 1, "max_retries": 1, "batch_size": batch_size}
    out = lm_eval.simple_evaluate(model=kind, model_args=args, tasks=[task], log_samples=True,
                                  apply_chat_template=kind == "local-chat-completions",
                                  task_manager=TaskManager(include_path=str(TASKS), include_defaults=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model,batch", [("openft-tiny", 1), (FT_MODEL, 4)])   # 4: several prompts per request
def test_loglikelihood_task_with_token_id_prompts(srv, model, batch, tiny_model_dir, monkeypatch):
    out = _evaluate(srv, "local-completions", model, "openft_mc", tiny_model_dir, monkeypatch, batch)
    acc = out["results"]["openft_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    samples = out["samples"]["openft_mc"]
    assert len(samples) == 6
    lls = [ll for s in samples for ll, _greedy in s["filtered_resps"]]
    assert len(lls) == sum(len(s["doc"]["choices"]) for s in samples)
    assert all(ll < 0 for ll in lls), lls          # a continuation of one or more tokens: never 0.0
    assert len(set(lls)) > 1
    if batch > 1:    # several prompts in one request: each choice's answer is its own prompt's
        one = _evaluate(srv, "local-completions", model, "openft_mc", tiny_model_dir, monkeypatch, 1)
        assert lls == pytest.approx([ll for s in one["samples"]["openft_mc"] for ll, _ in s["filtered_resps"]],
                                    rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["openft-tiny", FT_MODEL])
def test_generate_until_task_over_chat(srv, model, tiny_model_dir, monkeypatch):
    out = _evaluate(srv, "local-chat-completions", model, "openft_gen", tiny_model_dir, monkeypatch)
    em = out["results"]["openft_gen"]["exact_match,none"]
    assert 0.0 <= em <= 1.0
    samples = out["samples"]["openft_gen"]
    assert len(samples) == 4 and all(isinstance(s["filtered_resps"][0], str) for s in samples)
    answers = [s["resps"][0][0] for s in samples]
    if model == "openft-tiny":    # the tiny random model answers six newlines; the ending model nothing
        assert all(a for a in answers), answers
    else:
        assert answers == [""] * 4
