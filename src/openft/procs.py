"""Child processes that must not outlive the process that started them.

`die_with_parent(env_name)`, called first thing in a child (a job runner, a pace probe): ask the
Linux kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG), and exit at once if
the parent named in the environment variable `env_name` is already gone (it died before the
request took effect). `parent_env(env_name)`: that variable, for the parent to pass down.

A no-op on other systems. Knows nothing about jobs or training.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def parent_env(env_name: str) -> dict[str, str]:
    """The environment entry naming this process as the parent of the child about to start."""
    return {env_name: str(os.getpid())}


def die_with_parent(env_name: str) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it has already."""
    parent = int(os.environ.get(env_name, "0") or 0)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
