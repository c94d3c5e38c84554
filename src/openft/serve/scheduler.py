"""Which sequences run: the built-in engine's admission and its running batch.

`Scheduler` keeps the requests waiting (a FIFO), the runners that have sequences, and the count
of sequences admitted or waiting. Admission has two gates:

- at `generate()` (`check_room`, then `add` under the lock): no more than `serve_max_batch`
  running plus `serve_max_queue` waiting sequences, else RateLimited (the API's 429);
- between decode steps (`schedule`): a waiting request joins the batch when all its `n`
  sequences fit under `serve_max_batch` (or nothing runs at all), in arrival order; a cancelled
  one is forgotten there. Its sequences take KV slots in their runner under the lock, so
  `Engine.release_memory` (which holds it) sees a runner busy or idle, never in between.

`drop` frees a sequence's slot and its place in the count (finished, cancelled or failed).
One condition variable (`cv`) guards all of it; the decode thread sleeps on it when there is
nothing to run. Knows nothing about tokens, sampling or HTTP.
"""

from __future__ import annotations

import threading
from collections import deque

from openft.errors import RateLimited
from openft.serve.model_runner import ModelRunner
from openft.serve.sequence import Request, Sequence


class Scheduler:
    def __init__(self, max_batch: int, max_queue: int):
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self.cv = threading.Condition()     # re-entrant: a caller holding it may cancel or queue
        self.waiting: deque[Request] = deque()
        self.live: dict[int, ModelRunner] = {}  # runners with sequences (decode thread only)
        self.outstanding = 0                # sequences admitted or waiting
        self.closed = False

    @property
    def limit(self) -> int:
        """Sequences running plus waiting that the engine takes at once."""
        return self.max_batch + self.max_queue

    # ---- the callers' side -------------------------------------------------------------------
    def check_room(self, n: int) -> None:
        if self.outstanding + n > self.limit:
            raise RateLimited(f"The server is busy ({self.outstanding} sequences running or queued, limit "
                              f"{self.limit}); retry shortly.", retry_after=1.0)

    def add(self, r: Request) -> None:
        """Queue `r` (with `cv` held: the room is checked again, atomically); RateLimited if full."""
        self.check_room(len(r.seqs))
        self.outstanding += len(r.seqs)
        self.waiting.append(r)
        self.cv.notify()

    def cancel(self, r: Request) -> None:
        """The caller went away: its sequences are dropped at the next pass."""
        r.cancelled = True
        with self.cv:
            self.cv.notify()

    def close(self) -> None:
        """Stop scheduling: the decode thread returns at its next pass (see `abandoned`)."""
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def abandoned(self) -> list[Request]:
        """After the decode thread stopped: every request waiting or running, once; the queue empties."""
        out = list(self.waiting) + [s.req for rn in list(self.live.values()) for s in rn.seqs]
        self.waiting.clear()
        return out

    # ---- the decode thread's side ----------------------------------------------------------
    def schedule(self) -> bool:
        """Wait for work, then admit the waiting requests that fit. False once closed."""
        with self.cv:
            while not self.closed and not self.waiting and not self.live:
                self.cv.wait()
            if self.closed:
                return False
            running = self.running()
            while self.waiting and (running == 0 or running + len(self.waiting[0].seqs) <= self.max_batch):
                r = self.waiting.popleft()
                if r.cancelled:
                    self.outstanding -= len(r.seqs)
                    continue
                running += len(r.seqs)
                for s in r.seqs:       # under the lock: release_memory sees a runner busy or idle, never between
                    r.runner.add(s)
                self.live[id(r.runner)] = r.runner
        return True

    def runners(self) -> list[tuple[int, ModelRunner]]:
        """(key, runner) of each runner with sequences, in the order they step."""
        return list(self.live.items())

    def drop_cancelled(self, runner: ModelRunner) -> None:
        for s in [s for s in runner.seqs if s.req.cancelled]:
            self.drop(runner, s)

    def retire_if_idle(self, key: int, runner: ModelRunner) -> None:
        if not runner.seqs:
            del self.live[key]

    def drop(self, runner: ModelRunner, seq: Sequence) -> None:
        """`seq` leaves the batch (finished, cancelled or failed): its slot and its place in the count."""
        runner.remove(seq)
        with self.cv:
            self.outstanding -= 1

    def running(self) -> int:
        return sum(len(r.seqs) for r in self.live.values())

    def stats(self) -> dict:
        with self.cv:
            return {"running": sum(len(r.seqs) for r in list(self.live.values())),
                    "waiting": sum(len(r.seqs) for r in self.waiting), "outstanding": self.outstanding}
