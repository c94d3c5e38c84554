"""The CPU thread policy (openft.cpu_threads) and its two users, the trainer and the serving engine.

Deterministic: the CPU reading is injected (a simulated machine that shares its cores fairly
between runnable threads, as Linux's scheduler does), never read from this busy machine.
"""

from __future__ import annotations

import pytest
import torch

from openft import cpu_threads
from openft.cpu_threads import CpuReading, ThreadPolicy, others_busy, parse_setting, threads_for


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Whatever a test sets, the next one starts with this process's thread count."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("others,cores,want", [
    (0.0, 2, 2), (0.4, 2, 2), (0.6, 2, 1), (1.0, 2, 1), (1.4, 2, 1), (2.0, 2, 1), (6.0, 2, 1),
    (0.0, 8, 8), (2.6, 8, 5), (0.0, 1, 1), (3.0, 1, 1)])
def test_one_thread_per_core_the_others_leave_idle(others, cores, want):
    assert threads_for(others, cores) == want


def test_others_busy_is_the_machine_less_this_process():
    a = CpuReading(busy=50.0, own=10.0)
    assert others_busy(a, CpuReading(busy=70.0, own=20.0), 10.0) == pytest.approx(1.0)  # 2 cores busy, 1 ours
    assert others_busy(a, CpuReading(busy=60.0, own=20.0), 10.0) == 0.0  # all of it ours
    assert others_busy(a, CpuReading(busy=60.0, own=10.0), 0.0) == 0.0  # no time passed


def test_settings():
    assert [parse_setting(s) for s in (None, 0, "0", "", "auto", "default", 3, "12")] == [
        "auto", "auto", "auto", "auto", "auto", "default", 3, 12]
    with pytest.raises(ValueError):
        parse_setting(-1)
    with pytest.raises(ValueError):
        parse_setting("many")


class Machine:
    """`cores` cores shared fairly between the runnable threads of CPU-bound processes: each
    process's threads get min(1, cores / all runnable threads) of a core each."""

    def __init__(self, cores: int):
        self.cores, self.at, self.busy = cores, 0.0, 0.0
        self.threads: dict[str, int] = {}  # name -> runnable threads (0: the process is idle)
        self.own: dict[str, float] = {}

    def run(self, seconds: float) -> None:
        total = sum(self.threads.values())
        share = min(1.0, self.cores / total) if total else 0.0
        for name, t in self.threads.items():
            self.own[name] = self.own.get(name, 0.0) + t * share * seconds
        self.busy += min(total, self.cores) * seconds
        self.at += seconds

    def process(self, name: str, threads: int) -> ThreadPolicy:
        """An adapting process that starts with `threads` (torch's default)."""
        self.threads[name] = threads

        def apply(n: int) -> None:
            self.threads[name] = n

        return ThreadPolicy("auto", cores=self.cores, apply=apply, clock=lambda: self.at,
                            read=lambda: CpuReading(self.busy, self.own.get(name, 0.0)))


def test_two_adapting_processes_settle_on_a_core_each_and_one_takes_both_when_alone():
    """The serving engine and a job's trainer on 2 cores. Read with the load average (the
    engine's former policy, which counted its own threads in) both stepped down to one thread,
    saw the load fall to 2 and stepped up together again; here they settle and stay."""
    m = Machine(2)
    trainer, engine = m.process("trainer", 2), m.process("engine", 2)
    history = []
    for _ in range(6):
        m.run(3.0)
        trainer.retune()
        engine.retune()
        history.append((m.threads["trainer"], m.threads["engine"]))
    assert history == [(1, 1)] * 6
    m.threads["engine"] = 0  # the chats are answered: the engine idles
    m.run(3.0)
    assert trainer.retune() == 2 and m.threads["trainer"] == 2


def test_a_one_thread_neighbour_gets_its_core():
    m = Machine(2)
    trainer = m.process("trainer", 2)
    m.threads["neighbour"] = 1  # not adapting: a single-threaded CPU-bound process
    seen = []
    for _ in range(4):
        m.run(3.0)
        seen.append(trainer.retune())
    assert seen == [1, 1, 1, 1]


def test_fixed_and_default_settings_never_adapt():
    applied = []
    fixed = ThreadPolicy(3, cores=2, apply=applied.append, read=lambda: pytest.fail("a fixed count reads nothing"))
    fixed.every_s = 0
    assert applied == [3] and fixed.retune() == 3 and applied == [3]
    default = ThreadPolicy("default", cores=2, apply=applied.append, read=lambda: pytest.fail("default reads nothing"))
    default.every_s = 0
    assert default.retune() is None and applied == [3]


def test_no_reading_keeps_torchs_default():
    applied, clock = [], iter(range(0, 100, 5))
    policy = ThreadPolicy("auto", cores=2, apply=applied.append, read=lambda: None, clock=lambda: next(clock))
    assert [policy.retune() for _ in range(3)] == [None] * 3 and applied == []


def test_decisions_wait_for_the_interval():
    """A reading every `every_s` (3 s) at most; in between, retune() changes nothing and reads nothing."""
    m = Machine(2)
    m.threads["neighbour"] = 2
    trainer = m.process("trainer", 2)
    reads = []
    read = trainer._read
    trainer._read = lambda: reads.append(m.at) or read()
    m.run(2.0)
    assert trainer.retune() is None and reads == []  # 2 s: not yet
    m.run(1.0)
    assert trainer.retune() == 1 and reads == [3.0]
    m.threads["neighbour"] = 0
    m.run(1.0)
    assert trainer.retune() == 1 and reads == [3.0]  # the neighbour left 1 s ago: seen at the next reading
    m.run(2.0)
    assert trainer.retune() == 2 and reads == [3.0, 6.0]


# --- the users: the trainer between its steps, the engine between decode steps -------------------------

def _all_cores_busy_elsewhere(monkeypatch, cores: int):
    """Every core of the machine busy with other processes whenever the policy reads it, and a
    reading at every retune()."""
    import time

    monkeypatch.setattr(cpu_threads, "read_cpu", lambda: CpuReading(time.monotonic() * cores, 0.0))
    monkeypatch.setattr(ThreadPolicy, "every_s", 0.0)


class ThreadsPerStep:
    def __init__(self):
        from openft.train.hooks import RecordingHooks

        self.hooks = RecordingHooks()
        self.threads: list[int] = []
        on_metrics = self.hooks.on_metrics

        def record(metrics):
            self.threads.append(torch.get_num_threads())
            on_metrics(metrics)

        self.hooks.on_metrics = record


def _train(tmp_path, settings, **kw):
    from openft.train.loop import train
    from openft.train.spec import TrainSpec
    from tests.support.data import chat_rows, write_jsonl

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8, seed=0, system="Classify the review."))
    spec = TrainSpec(base_model="openft-tiny", train_file=str(data), output_dir=str(tmp_path / "run"), n_epochs=1,
                     batch_size=2, precision="fp32", **kw)
    rec = ThreadsPerStep()
    assert train(spec, rec.hooks, settings).status == "succeeded"
    return rec.threads


@pytest.mark.skipif(cpu_threads.usable_cores() < 2, reason="one core: one thread either way")
def test_the_trainer_steps_down_when_other_processes_hold_the_cores(tmp_path, settings, monkeypatch):
    _all_cores_busy_elsewhere(monkeypatch, cpu_threads.usable_cores())
    torch.set_num_threads(cpu_threads.usable_cores())  # torch's default: one per core
    assert _train(tmp_path, settings) == [1, 1, 1, 1]


@pytest.mark.skipif(cpu_threads.usable_cores() < 2, reason="one core: one thread either way")
def test_train_threads_default_and_num_threads_are_kept(tmp_path, settings, monkeypatch):
    _all_cores_busy_elsewhere(monkeypatch, cpu_threads.usable_cores())
    cores = cpu_threads.usable_cores()
    torch.set_num_threads(cores)
    before = settings.model_copy(update={"train_threads": "default"})
    assert _train(tmp_path / "default", before) == [cores] * 4  # OPENFT_TRAIN_THREADS=default: torch's own
    assert _train(tmp_path / "fixed", settings, num_threads=2) == [2] * 4  # the job's hyperparameter


@pytest.mark.skipif(cpu_threads.usable_cores() < 2, reason="one core: one thread either way")
def test_the_engine_uses_the_same_policy(settings, monkeypatch):
    from openft.serve.executor import Executor

    _all_cores_busy_elsewhere(monkeypatch, cpu_threads.usable_cores())
    torch.set_num_threads(cpu_threads.usable_cores())
    executor = Executor(settings, device="cpu")
    executor.tune_threads()
    assert torch.get_num_threads() == 1
    fixed = Executor(settings.model_copy(update={"serve_threads": 2}), device="cpu")
    fixed.tune_threads()
    assert torch.get_num_threads() == 2
