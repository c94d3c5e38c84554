"""Test-only fault injection: make a training process die at a named point, deterministically.

Inert unless `OPENFT_FAULT` is set (the fault tests set it on the server they start):

    OPENFT_FAULT="<point>[@<step>]:<action>[,...]"   e.g. "checkpoint@2:kill"
    points:  runner-start (the runner read its job), step (mid-step: after backward, before the
             optimizer step; @N is the step being computed), checkpoint (a checkpoint's temporary
             folder is written, not yet renamed), final (the final model's temporary folder is
             written, not yet renamed)
    actions: kill (SIGKILL itself, as the kernel or an operator would), exit (print a traceback
             line to stderr and exit 3 without recording anything), raise (a Python exception)
    OPENFT_FAULT_MARKER=<path>: fire once; the file is created when the fault fires and, once
             it exists, the fault is inert (so a retried run gets past the point).

Knows nothing about jobs; no torch.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ENV = "OPENFT_FAULT"
MARKER_ENV = "OPENFT_FAULT_MARKER"


def fault_point(name: str, step: int | None = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().partition(":")
        point, _, at = where.partition("@")
        if point != name or (at and step != int(at)):
            continue
        marker = os.environ.get(MARKER_ENV)
        if marker:
            try:
                Path(marker).touch(exist_ok=False)
            except FileExistsError:
                return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "exit":
            print(f"FaultInjected: exit at {name}" + (f" step {step}" if step is not None else ""),
                  file=sys.stderr, flush=True)
            os._exit(3)
        raise RuntimeError(f"fault injected at {name}" + (f" step {step}" if step is not None else ""))
