"""Job integrations: a job's `integrations` turned into loggers that the runner's hooks feed
with the resolved hyperparameters and every step's metrics.

    {"type": "wandb", "wandb": {"project", "name", "entity", "tags"}}   OpenAI's; through `wandb`
    {"type": "tensorboard"} (optionally "tensorboard": {})              openft's; event files in
                                                                        <job folder>/tensorboard/

wandb: `wandb.init(project, name, entity, tags, id=<job id>, resume="allow", config=<job and
hyperparameters>)`, files under the job folder (unless WANDB_DIR says otherwise), the run's mode
and login from the worker's environment (WANDB_MODE=offline, WANDB_API_KEY). The metrics go
under the names of the job's events and results file (train_loss, train_mean_token_accuracy,
valid_loss, ...). A logger that fails (its package is not installed on this worker, no wandb
login, a full disk) is turned off and reported as a warning event: it never fails the job.
`check_installed` is the API's check at job creation (400 naming `integrations`).

Knows the integrations' packages and the job row's fields; nothing about the database or HTTP.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from openft.errors import InvalidRequest
from openft.train import rules

PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}  # integration type -> the package it needs
SKIP = ("step", "total_steps")


def installed(package: str) -> bool:
    if package in sys.modules:
        return sys.modules[package] is not None  # None: the import is blocked
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def check_installed(integrations: list[dict] | None) -> None:
    """400 (param `integrations`) when an integration's package is not installed on this server."""
    for integration in integrations or []:
        package = PACKAGES[integration["type"]]
        if not installed(package):
            raise InvalidRequest(f"The {integration['type']} integration needs the `{package}` package, which is "
                                 f"not installed on this openft server (pip install {package}).",
                                 param="integrations", code="integration_unavailable")


def _scalars(data: dict) -> dict[str, float]:
    return {k: float(v) for k, v in data.items() if k not in SKIP and isinstance(v, (int, float)) and v is not None}


class WandbLogger:
    name = "wandb"

    def __init__(self, options: dict, job: dict):
        self.options, self.job, self.run = options or {}, job, None

    def start(self, config: dict) -> None:
        import wandb

        kw = {} if os.environ.get("WANDB_DIR") else {"dir": str(Path(self.job["output_dir"]))}
        self.run = wandb.init(project=self.options.get("project"), entity=self.options.get("entity"),
                              name=self.options.get("name") or self.job["id"], tags=self.options.get("tags"),
                              id=self.job["id"], resume="allow", config=config, reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True), **kw)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)


class TensorBoardLogger:
    name = "tensorboard"

    def __init__(self, options: dict, job: dict):
        self.job, self.writer = job, None

    def start(self, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(self.job["output_dir"]) / "tensorboard"))
        self.writer.add_text("hyperparameters", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self, failed: bool) -> None:
        if self.writer is not None:
            self.writer.close()


LOGGERS = {"wandb": WandbLogger, "tensorboard": TensorBoardLogger}


class Integrations:
    """The job's loggers; every call is guarded: a failing logger is dropped with one warning."""

    def __init__(self, integrations: list[dict] | None, job: dict, warn: Callable[[str], None]):
        self.job, self.warn = job, warn
        self.loggers = [LOGGERS[i["type"]](i.get(i["type"]) or {}, job) for i in integrations or []
                        if i.get("type") in LOGGERS]
        self.started = False

    def _each(self, what: str, call: Callable) -> None:
        for logger in list(self.loggers):
            try:
                call(logger)
            except Exception as e:  # noqa: BLE001 - logging must never fail the job
                self.loggers.remove(logger)
                self.warn(f"The {logger.name} integration stopped ({what}): {type(e).__name__}: {e}"[:2000])

    def on_resolved(self, hyperparameters: dict) -> None:
        if self.started or not self.loggers:
            return
        self.started = True
        job = self.job
        config = {"job_id": job["id"], "model": job["model"], "base_model": job["base_model"],
                  "method": (job.get("method") or {}).get("type"), "training_file": job["training_file"],
                  "validation_file": job.get("validation_file"), "suffix": job.get("suffix"),
                  "seed": job.get("seed"), **rules.hyperparameters(job.get("method")), **hyperparameters}
        self._each("starting", lambda lg: lg.start(config))

    def on_metrics(self, data: dict) -> None:
        if not self.loggers:
            return
        if not self.started:
            self.on_resolved({})
        scalars = _scalars(data)
        self._each("logging a step", lambda lg: lg.log(int(data["step"]), scalars))

    def close(self, failed: bool) -> None:
        self._each("finishing", lambda lg: lg.close(failed))
        self.loggers = []
