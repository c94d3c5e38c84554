"""The peak-memory estimate, the activation-checkpointing choice, and failing a run that cannot fit.

The estimate's activation term is checked against what autograd really saves on CPU (the
tensors passed to saved_tensors_hooks, summed once per storage); checkpointing is checked to
change memory, not the loss or the gradients.
"""

from __future__ import annotations

import pytest
import torch

from openft.data.encode import Encoded
from openft.train import memory
from openft.train.data import MicroBatch, pack
from openft.train.model import build_model, micro_batch_loss

GiB = memory.GiB


def _mb(vocab: int, t: int, trained: int = 4) -> MicroBatch:
    """A row of `t` random tokens whose last `trained` are trained."""
    ids = torch.randint(5, vocab - 1, (t,), generator=torch.Generator().manual_seed(0)).tolist()
    return pack([Encoded(ids, [0] * (t - trained) + [1] * trained)], None)[0]


def _saved_bytes(model, mb: MicroBatch, precision: str) -> int:
    """Bytes of the tensors autograd saves for backward in one forward (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ls, _, _ = micro_batch_loss(model, mb, precision)
    ls.backward()
    return sum(seen.values())


@pytest.fixture(scope="module")
def shape(tiny_model_dir):
    return memory.Shape.of(tiny_model_dir)


# SmolLM2-1.7B's shape (issue 14's GPU workload): 24 layers, where checkpointing pays
BIG = memory.Shape(n_params=1_711_376_384, n_linear=1_610_612_736, lora_dims=24 * (4 * 4096 + 3 * 10240),
                   hidden=2048, intermediate=8192, layers=24, vocab=49152)


def test_shape_of_a_model_folder_counts_its_parameters(tiny_model_dir, shape):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert shape.layers == model.config.num_hidden_layers and shape.vocab == model.config.vocab_size
    lora = build_model(tiny_model_dir, method="lora", precision="fp32", device=torch.device("cpu"), lora_r=8)
    assert 8 * shape.lora_dims == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert memory._meta_counts(tiny_model_dir) == {"n_params": shape.n_params, "n_linear": shape.n_linear,
                                                   "lora_dims": shape.lora_dims}


@pytest.mark.parametrize("precision,lora_sum", [("bf16", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_is_near_what_autograd_saves(tiny_model_dir, shape, precision, lora_sum, checkpointing):
    torch.manual_seed(0)
    model = build_model(tiny_model_dir, method="lora", precision=precision, device=torch.device("cpu"),
                        lora_sum=lora_sum, checkpointing=checkpointing)
    model.train()
    per_token = (_saved_bytes(model, _mb(shape.vocab, 384), precision)
                 - _saved_bytes(model, _mb(shape.vocab, 128), precision)) / 256 / shape.layers
    est = memory.activation_bytes_per_token_layer(shape, precision, lora_sum, checkpointing=checkpointing)
    assert 0.8 < est / per_token < 1.3, (est, per_token)


def test_estimate_grows_with_tokens_and_shrinks_with_checkpointing_and_qlora():
    shape = BIG
    kw = dict(method="lora", precision="bf16", lora_sum="fp32")
    totals = [memory.estimate(shape, tokens_per_row=t, **kw).total for t in (256, 1024, 4096)]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    on = memory.estimate(shape, tokens_per_row=4096, checkpointing=True, **kw)
    assert on.activations < memory.estimate(shape, tokens_per_row=4096, **kw).activations / 4
    assert memory.estimate(shape, method="qlora", precision="bf16", tokens_per_row=4096).weights \
        < memory.estimate(shape, tokens_per_row=4096, **kw).weights
    assert memory.estimate(shape, method="full", precision="bf16", tokens_per_row=256).trainable == 16 * shape.n_params


def test_checkpointing_turns_on_only_when_the_run_does_not_fit():
    shape = BIG
    kw = dict(method="lora", precision="bf16", tokens_per_row=4096)
    need = memory.estimate(shape, **kw).total
    roomy = memory.plan(shape, free=10 * need, total=20 * need, **kw)
    tight = memory.plan(shape, free=need, total=2 * need, **kw)
    assert not roomy.checkpointing and "fits in" in roomy.reason
    assert tight.checkpointing and "does not fit" in tight.reason and tight.estimate.total < need
    assert memory.plan(shape, free=need, total=2 * need, requested=False, **kw).checkpointing is False
    assert memory.plan(shape, free=10 * need, total=20 * need, requested=True, **kw).checkpointing is True
    qlora = memory.plan(shape, free=10 * need, total=20 * need, **{**kw, "method": "qlora"})
    assert qlora.checkpointing and "qlora" in qlora.reason


def test_a_run_that_clearly_cannot_fit_fails_before_loading_with_needed_and_had():
    shape = BIG
    p = memory.plan(shape, method="lora", precision="bf16", tokens_per_row=4096, free=GiB // 1000,
                    total=GiB // 100)
    with pytest.raises(memory.OutOfMemory) as e:
        memory.check_fits(p, "lora", "cuda")
    assert e.value.code == "out_of_memory"
    msg = e.value.message
    assert msg.startswith("Training needs about ") and "free of 0.0 GiB on the GPU" in msg and "qlora" in msg
    memory.check_fits(memory.plan(shape, method="lora", precision="bf16", tokens_per_row=4096, free=100 * GiB,
                                  total=100 * GiB), "lora", "cuda")  # fits: no error


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, shape, precision):
    mb = _mb(shape.vocab, 96, trained=48)

    def run(ck: bool):
        torch.manual_seed(0)
        model = build_model(tiny_model_dir, method="lora", precision=precision, device=torch.device("cpu"),
                            checkpointing=ck)
        model.train()
        for name, p in model.named_parameters():  # B starts at 0: give the adapter an effect
            if "lora_B" in name:
                p.data.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
        ls, _, _ = micro_batch_loss(model, mb, precision)
        ls.backward()
        return float(ls), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    (l0, g0), (l1, g1) = run(False), run(True)
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6)


def test_device_memory_on_cpu_is_the_hosts_available_memory():
    import psutil

    free, total = memory.device_memory(torch.device("cpu"))
    assert 0 < free <= total == psutil.virtual_memory().total


def test_the_oom_message_says_what_was_needed_and_had():
    shape = BIG
    p = memory.plan(shape, method="lora", precision="bf16", tokens_per_row=4096, free=3 * GiB, total=80 * GiB,
                    requested=False)
    msg = memory.oom_message(p, "lora", "cuda", None)
    assert msg.startswith("Training ran out of GPU memory: needed about ")
    assert "the GPU had 3.0 GiB free of 80.0 GiB" in msg and "activation_checkpointing" in msg
    assert "batch_size" in msg and "qlora" in msg
    assert memory.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert memory.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not memory.is_oom(RuntimeError("shape mismatch"))


def test_train_fails_before_loading_the_model_when_the_device_is_far_too_small(tmp_path, model_cache, monkeypatch):
    from openft.config import Settings
    from openft.train import loop
    from openft.train.hooks import RecordingHooks
    from openft.train.spec import TrainSpec
    from tests.support.data import write_chat_jsonl

    monkeypatch.setattr(memory, "device_memory", lambda device: (64 * 1024, GiB))
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("the model was loaded"))
    spec = TrainSpec(base_model="openft-tiny", train_file=str(write_chat_jsonl(tmp_path / "t.jsonl", 4)),
                     output_dir=str(tmp_path / "out"), n_epochs=1, batch_size=2, precision="fp32")
    with pytest.raises(memory.OutOfMemory) as e:
        loop.train(spec, RecordingHooks(), Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache))
    assert e.value.code == "out_of_memory" and "free of 1.0 GiB on the host" in e.value.message


def test_a_job_that_runs_out_of_gpu_memory_fails_with_what_it_needed_and_had(tmp_path, model_cache):
    """The real server and runner child; torch's OutOfMemoryError raised mid-step (test-only fault,
    as CUDA raises it when the card is full). The job fails with code out_of_memory and a message
    with the estimate and the device's memory; the server keeps serving."""
    import io

    from tests.support.data import write_chat_jsonl
    from tests.support.servers import LiveServer
    from tests.support.wait import wait_job

    server = LiveServer(tmp_path / "data", model_cache, env={"OPENFT_FAULT": "step@1:oom"}).start()
    try:
        client = server.client()
        data = write_chat_jsonl(tmp_path / "train.jsonl", 10).read_bytes()
        f = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}})
        job = wait_job(client, job.id, timeout=180)
        assert job.status == "failed" and job.error.code == "out_of_memory", job.error
        assert job.error.message.startswith("Training ran out of host memory: needed about "), job.error.message
        assert "GiB free of" in job.error.message and "activation_checkpointing" in job.error.message
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert any(m.startswith("Activation checkpointing off: the estimated peak") for m in events), events
        assert client.models.retrieve("openft-tiny").id == "openft-tiny"  # the server is still up
    finally:
        server.stop()
