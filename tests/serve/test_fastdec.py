"""The fixed-shape decode step (serve/static_decode.py) against the ragged one, on CPU: the same
tokens with two adapters and base rows, sequences joining and leaving between steps; the LoRA row
mask built once per batch composition; a step that runs out of device memory fails only its
requests. The CUDA-graph capture itself is tested under the `gpu` marker."""

from __future__ import annotations

import asyncio

import pytest
import torch

from openft.serve.lora import load_adapter
from openft.serve.model_runner import ModelRunner, Slot
from openft.serve.sampling import sample_batch
from openft.serve.static_decode import StaticDecoder, bucket_len, bucket_rows
from openft.serve.types import Finish, GenerationRequest, SamplingParams, Usage
from tests.support.serving import collect, run


def make_runner(path, **kw) -> ModelRunner:
    return ModelRunner(path, device="cuda" if kw.pop("cuda", False) else "cpu", dtype=torch.float32, name="t", **kw)


def prompt(i: int, n: int) -> list[int]:
    return [(7 * i + 3 * j) % 250 + 5 for j in range(n)]


def drive(runner: ModelRunner, adapters) -> dict[str, list[int]]:
    """A fixed schedule of joins, greedy steps and leaves; returns each sequence's tokens."""
    seqs: dict[str, Slot] = {}
    out: dict[str, list[int]] = {}

    def join(name, i, n, adapter):
        s = Slot(feed=prompt(i, n), adapter=adapter)
        runner.add(s)
        seqs[name], out[name] = s, []

    def step():
        live = list(runner.seqs)
        logits, _ = runner.forward()
        ids = sample_batch(logits, [0.0] * len(live), [1.0] * len(live), [None] * len(live)).tolist()
        for s, t in zip(live, ids):
            name = next(k for k, v in seqs.items() if v is s)
            out[name].append(t)
            s.feed = [t]

    a0, a1 = adapters
    join("base", 0, 11, None)
    join("a0", 1, 17, a0)
    join("a1", 2, 9, a1)
    for _ in range(4):
        step()
    join("a0b", 3, 14, a0)          # joins a running batch: one ragged step, then static again
    join("base2", 4, 6, None)
    for _ in range(3):
        step()
    runner.remove(seqs.pop("a0"))   # leaves from the middle of the decoding slots
    for _ in range(3):
        step()
    join("a1b", 5, 12, a1)
    for _ in range(2):
        step()
    runner.remove(seqs.pop("base"))
    runner.remove(seqs.pop("base2"))
    for _ in range(3):
        step()
    for s in list(runner.seqs):
        runner.remove(s)
    return out


@pytest.fixture(scope="module")
def runners(tiny_model_dir):
    return make_runner(tiny_model_dir, static_decode=False), make_runner(tiny_model_dir, static_decode=True)


def test_static_decode_gives_the_ragged_steps_tokens(runners, adapters):
    ragged, static = runners
    assert ragged.static is None and static.static is not None and static.static.graphs is None  # no CUDA here
    loaded = [[load_adapter(adapters[i], f"a{i}", r.linear_names, r.dtype, r.device) for i in range(2)]
              for r in (ragged, static)]
    expected = drive(ragged, loaded[0])
    got = drive(static, loaded[1])
    assert got == expected
    assert static.static.steps >= 10 and static.peak_adapters == 2       # most steps ran in fixed shapes
    assert len({tuple(v) for v in expected.values()}) >= 5              # the adapters change the output


def test_static_step_logits_match_the_ragged_step(runners, adapters):
    ragged, static = runners
    logits = []
    for r in (ragged, static):
        ads = [load_adapter(adapters[i], f"a{i}", r.linear_names, r.dtype, r.device) for i in range(2)]
        seqs = [Slot(feed=prompt(i, 5 + 3 * i), adapter=[None, ads[0], ads[1]][i % 3]) for i in range(5)]
        for s in seqs:
            r.add(s)
        r.forward()
        for s in seqs:
            s.feed = [11]
        logits.append(r.forward()[0])
        for s in seqs:
            r.remove(s)
    assert logits[0].shape == logits[1].shape == (5, ragged.model.config.vocab_size)
    torch.testing.assert_close(logits[1], logits[0], atol=2e-5, rtol=1e-4)


def test_buckets():
    assert [bucket_rows(n) for n in (1, 2, 3, 5, 16, 17, 33)] == [1, 2, 4, 8, 16, 32, 64]
    assert [bucket_len(n, 2048) for n in (1, 256, 257, 1500)] == [256, 256, 512, 2048]
    assert bucket_len(3000, 2500) == 2500   # never past the cache


def test_lora_mask_is_built_once_per_composition(tiny_model_dir, adapters):
    r = make_runner(tiny_model_dir, static_decode=False)
    ads = [load_adapter(adapters[i], f"a{i}", r.linear_names, r.dtype, r.device) for i in range(2)]
    seqs = [Slot(feed=prompt(i, 6), adapter=[None, ads[0], ads[1]][i % 3]) for i in range(3)]
    for s in seqs:
        r.add(s)
    r.forward()
    built = r.lora.mask_builds
    for _ in range(4):                      # same rows, same adapters: the mask is reused
        for s in seqs:
            s.feed = [9]
        r.forward()
    assert r.lora.mask_builds == built + 1  # the first decode step's composition, then none
    r.remove(seqs[1])
    for s in (seqs[0], seqs[2]):
        s.feed = [9]
    r.forward()
    assert r.lora.mask_builds == built + 2  # a sequence left: a new composition


def test_static_mask_buffer_is_rewritten_in_place(tiny_model_dir, adapters):
    r = make_runner(tiny_model_dir, static_decode=False)
    a0, a1 = [load_adapter(adapters[i], f"a{i}", r.linear_names, r.dtype, r.device) for i in range(2)]
    key, n, keep = r.lora.static_rows([a0, a1, None, None], r.device, r.dtype)
    mask, reps = keep[1], dict(keep[2])
    assert n == 2 and sorted(reps) == [2, 3]        # gate|up and q|k|v repeat the mask
    first = mask.clone()
    key2, _, keep2 = r.lora.static_rows([a1, a0, a0, None], r.device, r.dtype)
    assert key2 == key and keep2 is keep and keep2[1] is mask          # same buffer: a captured graph stays valid
    assert torch.equal(mask[0], first[1]) and torch.equal(mask[1], first[0]) and mask[3].sum() == 0
    assert torch.equal(reps[3], mask.repeat(1, 3))


def chat(**params) -> GenerationRequest:
    return GenerationRequest(base_model="openft-tiny", messages=[{"role": "user", "content": "Hello there"}],
                             params=SamplingParams(**params))


def test_engine_static_path_same_answers_as_the_ragged_path(engine_factory, adapters):
    """Through the engine: greedy requests of two adapters and the base, of different lengths and a
    stop string, joining while others decode, give the same text with the static step as without."""
    def reqs():
        out = []
        for i in range(6):
            a = [None, adapters[0], adapters[1]][i % 3]
            out.append(GenerationRequest(base_model="openft-tiny", adapter_path=a, adapter_key=a,
                                         messages=[{"role": "user", "content": f"Tell me about {i}"}],
                                         params=SamplingParams(max_tokens=4 + 3 * i, temperature=0,
                                                               stop=["e"] if i == 4 else [])))
        return out

    results = []
    for static in (False, True):
        engine = engine_factory()
        run(collect(engine, chat(max_tokens=1)))        # loads the runner
        runner = engine._runners["openft-tiny"]
        if static:
            runner.static = StaticDecoder(runner, graphs=False)

        async def main(engine=engine):
            tasks = []
            for r in reqs():
                tasks.append(asyncio.create_task(collect(engine, r)))
                await asyncio.sleep(0.01)               # later ones join a running batch
            return await asyncio.gather(*tasks)

        results.append([(texts, finishes, usage.completion_tokens) for texts, finishes, usage, _ in run(main())])
        if static:
            assert runner.static.steps > 0
    assert results[1] == results[0]
    assert {f[0] for _, f, _ in results[0]} >= {"length"}


def test_out_of_memory_in_a_step_fails_only_that_step(engine_factory):
    engine = engine_factory()
    run(collect(engine, chat(max_tokens=1)))
    runner = engine._runners["openft-tiny"]
    released = []
    real_release, real_forward = engine.release_memory, runner.forward
    engine.release_memory = lambda: released.append(1) or real_release()
    calls = {"n": 0}

    def forward():
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward()

    runner.forward = forward
    with pytest.raises(Exception) as err:
        run(collect(engine, chat(max_tokens=8, temperature=0)))
    assert "ran out of memory" in str(err.value) and "serve_max_batch" in str(err.value)
    assert released == [1]
    assert not runner.seqs
    _, _, usage, items = run(collect(engine, chat(max_tokens=3, temperature=0)))  # the thread lives on
    assert isinstance(items[-1], Usage) and isinstance(items[-2], Finish) and usage.completion_tokens == 3


def test_graph_cache_falls_back_to_eager_when_capture_fails_and_raises_out_of_memory():
    """DecodeGraphs' bookkeeping, with the capture itself replaced (it needs CUDA)."""
    from openft.serve.cuda_graphs import DecodeGraphs

    class FakeGraph:
        def __init__(self):
            self.replays = 0

        def replay(self):
            self.replays += 1

    g = DecodeGraphs(max_graphs=2)
    g._capture = lambda fn, keep: (FakeGraph(), fn(), keep)
    assert g.run(("a",), lambda: "out-a", None) == "out-a"
    assert g.run(("a",), lambda: "never", None) == "out-a"          # replayed, not run again
    g.run(("b",), lambda: "out-b", None)
    g.run(("c",), lambda: "out-c", None)
    assert list(g._graphs) == [("b",), ("c",)]                      # least recently used goes first
    oom = DecodeGraphs()
    oom._capture = lambda fn, keep: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        oom.run(("a",), lambda: "x", None)
    assert oom.disabled is None                                     # memory: the engine fails the step
    bad = DecodeGraphs()
    bad._capture = lambda fn, keep: (_ for _ in ()).throw(RuntimeError("operation not permitted when capturing"))
    assert bad.run(("a",), lambda: "eager", None) == "eager"
    assert "not permitted" in bad.disabled and bad.run(("b",), lambda: "eager2", None) == "eager2"


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_graph_replay_gives_the_eager_steps_tokens(tiny_model_dir, adapters):
    eager = make_runner(tiny_model_dir, cuda=True, static_decode=True, cuda_graphs=False)
    graphed = make_runner(tiny_model_dir, cuda=True, static_decode=True, cuda_graphs=True)
    out = []
    for r in (eager, graphed):
        ads = [load_adapter(adapters[i], f"a{i}", r.linear_names, r.dtype, r.device) for i in range(2)]
        out.append(drive(r, ads))
    assert graphed.static.graphs.disabled is None, graphed.static.graphs.disabled
    assert graphed.static.graphs.captures >= 2 and graphed.static.graphs.replays > graphed.static.graphs.captures
    assert out[1] == out[0]


@pytest.mark.gpu
@cuda
def test_cuda_graphs_are_dropped_when_the_cache_is_released(tiny_model_dir):
    r = make_runner(tiny_model_dir, cuda=True, static_decode=True)
    s = Slot(feed=prompt(0, 5))
    r.add(s)
    r.forward()
    s.feed = [3]
    r.forward()
    assert r.static.graphs.captures == 1
    r.cache = None                      # what Engine.release_memory does
    assert not r.static.graphs._graphs
