"""Following a fine-tuning job: new events in order, and a live progress bar (step, loss, ETA).

`FollowState` is pure: it takes event objects (SDK models or dicts, in any order, repeats
ignored) and job snapshots, and says what to print and what the bar shows; `follow_job` is
the polling loop around it (SDK calls + rich). Knows nothing about how the server stores events.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def format_eta(seconds: float | None) -> str:
    """12 -> '0:12', 3725 -> '1:02:05', None -> '-'."""
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_event(event: Any) -> str:
    """`[HH:MM:SS] message` in local time, with the level when it is not info."""
    ts = _get(event, "created_at")
    when = dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts is not None else "--:--:--"
    level = _get(event, "level") or "info"
    tag = "" if level == "info" else f"{level.upper()}: "
    return f"[{when}] {tag}{_get(event, 'message', '')}"


@dataclass
class FollowState:
    """What is known about a job from its events and snapshots."""

    seen: set[str] = field(default_factory=set)
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    status: str | None = None
    fine_tuned_model: str | None = None
    estimated_finish: int | None = None
    error: Any = None
    _first: tuple[int, float] | None = None   # (step, created_at) of the first metrics event seen
    _last: tuple[int, float] | None = None    # (step, created_at) of the latest

    def add_events(self, events: list[Any]) -> list[Any]:
        """Records new events (given newest first, as listed); returns them oldest first, repeats dropped."""
        # `events` come newest first (the API's order); reverse, then a stable sort by time keeps
        # the server's order among events of the same second.
        fresh = []
        for e in reversed(events):
            if _get(e, "id") not in self.seen:
                self.seen.add(_get(e, "id"))
                fresh.append(e)
        fresh.sort(key=lambda e: (_get(e, "created_at") or 0))
        for e in fresh:
            if _get(e, "type") == "metrics":
                self._metrics(_get(e, "data") or {}, _get(e, "created_at"))
        return fresh

    def _metrics(self, data: dict, created_at: float | None) -> None:
        step = data.get("step")
        if step is None:
            return
        if self.step is not None and step < self.step:  # an older event arriving late
            return
        self.step = int(step)
        if data.get("total_steps"):
            self.total_steps = int(data["total_steps"])
        if data.get("train_loss") is not None:
            self.train_loss = float(data["train_loss"])
        for key in ("full_valid_loss", "valid_loss"):
            if data.get(key) is not None:
                self.valid_loss = float(data[key])
                break
        if created_at is not None:
            if self._first is None:
                self._first = (self.step, float(created_at))
            self._last = (self.step, float(created_at))

    def update_job(self, job: Any) -> None:
        self.status = _get(job, "status")
        self.fine_tuned_model = _get(job, "fine_tuned_model") or self.fine_tuned_model
        self.estimated_finish = _get(job, "estimated_finish")
        self.error = _get(job, "error")

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def eta(self, now: float) -> float | None:
        """Seconds left: the server's estimated_finish if given, else the observed step rate."""
        if self.done:
            return 0.0
        if self.estimated_finish:
            return max(0.0, self.estimated_finish - now)
        if self._first and self._last and self.total_steps and self._last[0] > self._first[0]:
            per_step = (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])
            return max(0.0, per_step * (self.total_steps - self._last[0]) - (now - self._last[1]))
        return None

    def fields(self, now: float) -> dict:
        """What the progress bar shows."""
        loss = "-" if self.train_loss is None else f"{self.train_loss:.4f}"
        if self.valid_loss is not None:
            loss += f" (valid {self.valid_loss:.4f})"
        return {"description": self.status or "waiting", "completed": self.step or 0,
                "total": self.total_steps, "loss": loss, "eta": format_eta(self.eta(now))}

    def summary(self) -> str:
        """The last line: the outcome, with the fine-tuned model or the error."""
        if self.status == "succeeded":
            return f"Job succeeded. Fine-tuned model: {self.fine_tuned_model}"
        if self.status == "failed":
            err = self.error
            msg = _get(err, "message") if err is not None else None
            code = _get(err, "code") if err is not None else None
            return f"Job failed: {msg or 'no error message'}" + (f" ({code})" if code else "")
        if self.status == "cancelled":
            return "Job cancelled."
        if self.status == "paused":
            return "Job paused; continue it with `openft jobs resume JOB_ID`."
        return f"Job is {self.status}."


def fetch_new_events(client, job_id: str, seen: set[str], page_size: int = 100) -> list[Any]:
    """Events not in `seen`, walking the newest-first pages until a seen one appears."""
    out = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=page_size):  # auto-paginates
        if event.id in seen:
            break
        out.append(event)
    return out


def follow_job(client, job_id: str, *, interval: float = 1.0, show_metrics: bool | None = None,
               out: Callable[[str], None] | None = None, stop_on_pause: bool = True,
               live: bool | None = None) -> FollowState:
    """Prints a job's events as they come with a live bar until it ends (or pauses)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console()
    live = console.is_terminal if live is None else live
    show_metrics = (not live) if show_metrics is None else show_metrics
    state = FollowState()
    progress = None
    task = None
    if live:
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("step {task.completed}/{task.fields[total_text]}"),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("ETA {task.fields[eta]}"),
                            console=console, transient=False)
        progress.start()
        task = progress.add_task("waiting", total=None, total_text="?", loss="-", eta="-")
    if out is not None:
        emit = out
    elif progress is not None:  # above the bar; event text is not rich markup
        def emit(line: str) -> None:
            progress.console.print(line, markup=False, highlight=False)
    else:
        def emit(line: str) -> None:
            print(line, flush=True)
    try:
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            for e in state.add_events(fetch_new_events(client, job_id, state.seen)):
                if _get(e, "type") == "metrics" and not show_metrics:
                    continue
                emit(format_event(e))
            state.update_job(job)
            if progress is not None:
                f = state.fields(time.time())
                progress.update(task, description=f["description"], completed=f["completed"], total=f["total"],
                                total_text=f["total"] or "?", loss=f["loss"], eta=f["eta"])
            if state.done or (stop_on_pause and state.status == "paused"):
                break
            time.sleep(interval)
    finally:
        if progress is not None:
            progress.stop()
    sys.stdout.flush()
    return state
