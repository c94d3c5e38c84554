"""Test-only fault injection: make a training process die at a named point, deterministically.

Inert unless `OPENFT_FAULT` is set (the fault tests set it on the server they start):

    OPENFT_FAULT="<point>[@<step>]:<action>[,...]"   e.g. "checkpoint@2:kill"
    points:  runner-start (the runner read its job), step (mid-step: after backward, before the
             optimizer step; @N is the step being computed), checkpoint (a checkpoint's temporary
             folder is written, not yet renamed), final (the final model's temporary folder is
             written, not yet renamed), eval-item (an eval run's output item is written; `raise`
             there stops the worker, which puts the run back in the queue: openft.jobs.eval_runs),
             data-tool (the data tools' child process, before it reads the table: openft.data.isolated)
    actions: kill (SIGKILL itself, as the kernel or an operator would), exit (print a traceback
             line to stderr and exit 3 without recording anything), hold (block until killed:
             the test kills the server meanwhile), wait (block until the file <point>[@<step>].go
             exists in OPENFT_FAULT_ONCE_DIR: the test lets it go on), raise (a Python exception),
             oom (torch's OutOfMemoryError, as CUDA raises it when the card is full)
    OPENFT_FAULT_ONCE_DIR=<folder>: each fault fires once; the file <folder>/<point>@<step> is
             created when it fires and, once it exists, that fault is inert (a retried run gets
             past the point; a test waits for the file to know the point was reached).

Knows nothing about jobs; imports torch only for the oom action.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ENV = "OPENFT_FAULT"
ONCE_ENV = "OPENFT_FAULT_ONCE_DIR"


def fault_point(name: str, step: int | None = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().partition(":")
        point, _, at = where.partition("@")
        if point != name or (at and step != int(at)):
            continue
        once = os.environ.get(ONCE_ENV)
        if once:
            try:
                (Path(once) / where).touch(exist_ok=False)
            except FileExistsError:
                return
        if action == "wait":
            go = Path(once or ".") / f"{where}.go"
            while not go.exists():
                time.sleep(0.05)
            return
        if action == "hold":
            while True:
                time.sleep(60)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "exit":
            print(f"FaultInjected: exit at {name}" + (f" step {step}" if step is not None else ""),
                  file=sys.stderr, flush=True)
            os._exit(3)
        if action == "oom":
            import torch  # only when the fault fires

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fault injected)")
        raise RuntimeError(f"fault injected at {name}" + (f" step {step}" if step is not None else ""))
