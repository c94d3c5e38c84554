"""A pace probe (openft.train.probe, a child process) dies with the process that started it: a
server killed with SIGKILL left its probe training for 1-2 more minutes.

The probe is held deterministically: its training file is a FIFO, so the child blocks reading it
once it has started (after it asked the kernel for PR_SET_PDEATHSIG); the test knows the child got
there when its own open() of the FIFO for writing returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.wait import wait_until

PARENT = textwrap.dedent("""
    import sys
    from openft.config import Settings
    from openft.train.probe import run_probe
    run_probe(Settings(data_dir=sys.argv[2]), "openft-tiny", sys.argv[1], 12, {}, timeout=600)
""")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has stopped running; its new parent reaps it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_parent_with_sigkill_ends_the_probe(tmp_path):
    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path("src").resolve()),
                                                                   os.environ.get("PYTHONPATH")) if p)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(fifo), str(tmp_path / "data")], env=env)
    child = None
    try:
        with open(fifo, "w") as held:   # returns once the probe opened its training file: it is running
            (child,) = wait_until(lambda: _children(parent.pid), 30, what="the probe child")
            parent.send_signal(signal.SIGKILL)
            parent.wait(30)
            wait_until(lambda: _gone(child), 30, what=f"the probe {child} to die with its parent")
            held.close()
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
