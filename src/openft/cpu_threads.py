"""How many CPU threads torch runs when other processes share the cores: one policy, used by the
serving engine (openft.serve.executor) and the trainer (openft.train.loop).

Threads of one torch op (a matmul) wait for each other at its end. When another process holds a
core, the thread queued behind it stalls every op of this one: the engine measured 6x slower at
load 6 on 2 cores, and a DPO job took 12.6 s per step beside other work against about 0.3 s per
pair idle. So a process runs one intra-op thread per core that *other* processes leave idle,
and re-decides every few seconds between units of work (a decode step, an optimizer step).

The reading (`read_cpu`) is the CPU time spent on this process's cores, all processes together
(psutil's per-CPU times), and this process's own CPU time (all its threads); between two
readings the difference is what other processes used, in cores (`others_busy`). Unlike the
1-minute load average it leaves this process's own threads out, so two adapting processes on the
same cores (`openft serve`'s engine and its job's trainer) settle on a share each instead of
stepping down together, seeing the load fall, and stepping up together again; and it follows a
neighbour that starts or stops within one interval instead of about a minute.

Knows nothing about models, jobs or HTTP. Tests inject the reading, the clock and the thread setter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

MODES = ("auto", "default")
"""Besides a thread count: adapt to the idle cores, or leave torch's default (one per core)."""


@dataclass(frozen=True)
class CpuReading:
    busy: float  # CPU seconds all processes have spent on this process's cores (since boot)
    own: float   # CPU seconds this process has spent, all its threads (since it started)


def logical_cores() -> int:
    """The logical CPUs this process may run on (its affinity; every CPU where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cores() -> int:
    """The physical cores this process may run on: its affinity, less the hyperthreads' share
    (torch's default thread count counts physical cores too; a second thread on one core's
    hyperthread only waits for the first in a matmul)."""
    logical = logical_cores()
    try:
        import psutil

        per_core = (psutil.cpu_count() or 1) / (psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)
    except Exception:  # noqa: BLE001 - without psutil's counts, every logical CPU is a core
        per_core = 1.0
    return max(1, int(logical / max(1.0, per_core)))


def read_cpu() -> CpuReading | None:
    """Now's reading (see the module doc); None where the OS gives no per-CPU times."""
    try:
        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
    except Exception:  # noqa: BLE001 - no reading: the policy keeps what it has
        return None
    try:
        mine = [per_cpu[i] for i in os.sched_getaffinity(0) if i < len(per_cpu)]
    except (AttributeError, OSError):
        mine = []
    own = os.times()
    return CpuReading(sum(_busy(t) for t in (mine or per_cpu)), own.user + own.system)


def _busy(t) -> float:
    """Seconds one CPU was not idle: waiting for I/O is idle, and Linux counts guest time in user too."""
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def others_busy(before: CpuReading, after: CpuReading, seconds: float) -> float:
    """Cores other processes kept busy, on average, over the `seconds` between two readings (>= 0)."""
    if seconds <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / seconds)


def threads_for(others: float, cores: int) -> int:
    """The rule: one thread per core other processes leave idle, a core they keep busy more than
    half the time being theirs; at least one thread."""
    return max(1, min(cores, cores - int(others + 0.5)))


def parse_setting(setting: int | str | None) -> int | str:
    """"auto" (also None, 0 and ""), "default", or a thread count >= 1 (an int or its digits)."""
    if setting in (None, 0, "", "0", "auto"):
        return "auto"
    if setting == "default":
        return "default"
    n = int(setting)
    if n < 1:
        raise ValueError(f"threads must be 'auto', 'default' or a number >= 1, not {setting!r}")
    return n


class ThreadPolicy:
    """The intra-op thread count of this process, by `setting` (`parse_setting`):

    - "auto": `threads_for` the other processes' busy cores since the last reading, re-decided
      at `retune()` once `every_s` seconds have passed (before the first interval: torch's default);
    - "default": torch's own count, never touched (OPENFT_TRAIN_THREADS=default: the "before"
      of benchmarks/busy_training.py);
    - a number: that many threads, set once here.
    """

    every_s = 3.0  # seconds between two decisions (a reading costs ~50 us; a step is longer)

    def __init__(self, setting: int | str | None = "auto", *, cores: int | None = None,
                 read: Callable[[], CpuReading | None] | None = None, apply: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.mode = parse_setting(setting)
        self.cores = cores or usable_cores()
        self._read = read or read_cpu
        if apply is None:
            import torch

            apply = torch.set_num_threads
        self._apply, self._clock = apply, clock
        self.threads: int | None = None  # what this policy last set (None: torch's default, untouched)
        self._last: tuple[float, CpuReading] | None = None  # (when, the reading then)
        self._tried = clock()
        if isinstance(self.mode, int):
            self._set(self.mode)
        elif self.mode == "auto":
            self._take(self._tried)

    def retune(self) -> int | None:
        """Between two units of work: with "auto", once `every_s` seconds have passed since the
        last reading, read the CPU again and set the thread count to match. Returns the count
        this policy set (None: torch's default, untouched)."""
        now = self._clock()
        if self.mode != "auto" or now - self._tried < self.every_s:
            return self.threads
        self._tried = now
        last = self._last
        reading = self._take(now)
        if last is not None and reading is not None:
            n = threads_for(others_busy(last[1], reading, now - last[0]), self.cores)
            if n != self.threads:
                self._set(n)
        return self.threads

    def _take(self, now: float) -> CpuReading | None:
        reading = self._read()
        if reading is not None:
            self._last = (now, reading)
        return reading

    def _set(self, n: int) -> None:
        self._apply(n)
        self.threads = n
