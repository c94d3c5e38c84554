"""Where a claimed job's runner process runs, chosen by the `job_backend` setting
(`OPENFT_JOB_BACKEND`): `local`, a child process on this machine (openft.jobs.backends.local).

`open_backend(settings)` builds the backend the settings name; the worker uses it only through
the `JobBackend` / `JobRun` protocols of openft.jobs.backends.base. A new backend is one module
with one class and one line in `BACKENDS`. An unknown name is refused naming the setting and the
known names.
"""

from __future__ import annotations

from importlib import import_module

from openft.config import Settings
from openft.errors import InvalidRequest
from openft.jobs.backends.base import JobBackend, JobRun, RunExit, StartFailed

BACKENDS = {"local": "openft.jobs.backends.local:LocalBackend"}
"""name -> "module:class", imported only when chosen (a backend may need packages others lack)."""


def open_backend(settings: Settings, *, backend: str | None = None) -> JobBackend:
    """The job backend `settings.job_backend` (or `backend`) names."""
    name = backend or settings.job_backend
    if name not in BACKENDS:
        raise InvalidRequest(f"OPENFT_JOB_BACKEND (job_backend) must be one of: {', '.join(BACKENDS)}; "
                             f"got {name!r}.", param="job_backend", code="unknown_job_backend")
    module, cls = BACKENDS[name].split(":")
    return getattr(import_module(module), cls)(settings)


__all__ = ["BACKENDS", "JobBackend", "JobRun", "RunExit", "StartFailed", "open_backend"]
