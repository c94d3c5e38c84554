"""Dashboard speed in headless Chromium (Debian's `chromium`, driven by Playwright), against a
real `openft serve` (no worker) whose database is seeded directly, the way the server stores
jobs and metrics:

  job page     a succeeded job with N (10,000) steps: one `metrics` event per step as
               openft.jobs.hooks.DBHooks writes it (loss and token accuracy every step, a
               validation point every 10 steps, a full validation at each of 4 epochs' ends).
               Time from navigation start until both charts have drawn all N points (each
               chart element's data-drawn-at, set by uPlot's draw hook).
  jobs list    M (1,000) jobs in the project: navigation start to the first page's rows
               (performance mark "openft:jobs-list").
  live point   a running job's page is open; a new metrics event is inserted into the database;
               time from that commit to the step being in the chart's data (checked every frame).
               Repeated with random pauses so the page's 1 s poll is caught at every phase.

Each page load is a fresh browser context (nothing cached), repeated --runs times; the median
and the worst are printed beside the targets (500 ms, 1 s, 2 s), with the CPU model.

    python benchmarks/dashboard.py            # 10,000 steps, 1,000 jobs, 5 runs, 10 live points
    python benchmarks/dashboard.py --quick    # 1,000 steps, 100 jobs, 1 run, 2 live points (proves it works)

`seed_jobs` and `seed_metrics` are also used by tests/web/test_jobs.py.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line  # benchmarks/machine.py (scripts run from benchmarks/ on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
KEY = "sk-openft-bench-dashboard"
PROJECT = "proj_default"  # the admin key's project (openft.store.auth.DEFAULT_PROJECT_ID)
TARGETS_MS = {"job page": 500, "jobs list": 1000, "live point": 2000}


# ---- seeding (as the server writes rows) ---------------------------------------------------------

def seed_jobs(engine, n: int, *, project: str = PROJECT, status: str = "succeeded", model: str = "openft-tiny",
              start: float | None = None) -> list[str]:
    """Insert n job rows (oldest first, one second apart), as the API and the worker leave them."""
    import sqlalchemy as sa

    from openft.ids import job_id
    from openft.store.db import jobs

    start = int(start or time.time() - n - 60)
    ids = []
    with engine.begin() as conn:
        seq = (conn.execute(sa.select(sa.func.max(jobs.c.seq))).scalar() or 0)
        rows = []
        for i in range(n):
            jid = job_id()
            ids.append(jid)
            done = status in ("succeeded", "failed", "cancelled")
            rows.append(dict(
                id=jid, project_id=project, seq=seq + i + 1, model=model, base_model=model, status=status,
                created_at=start + i, started_at=start + i + 1 if status != "queued" else None,
                finished_at=start + i + 30 if done else None,
                fine_tuned_model=f"ft:{model}:openft:bench{i}:{jid.removeprefix('ftjob-')[:8]}" if status == "succeeded" else None,
                method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 4,
                                                                                 "learning_rate_multiplier": 1.0}}},
                training_file="file-seeded", validation_file=None, result_files=[],
                trained_tokens=1000 * (i + 1) if status == "succeeded" else None, seed=i, suffix=f"bench{i}",
                metadata=None, integrations=None, error=None, attempts=1, workers_lost=0, runner_retries=0))
        conn.execute(jobs.insert(), rows)
    return ids


def metric_point(step: int, total: int, epochs: int = 4) -> dict:
    """One step's metrics as DBHooks stores them (openft.jobs.hooks: the payload of a `metrics` event)."""
    x = step / total
    valid = step % 10 == 0
    full = step % max(1, total // epochs) == 0
    loss = 2.5 * math.exp(-3 * x) + 0.2 + 0.05 * math.sin(step)
    acc = 1 - loss / 3
    return {"step": step, "total_steps": total, "train_loss": loss, "train_mean_token_accuracy": acc,
            "valid_loss": loss + 0.1 if valid else None, "valid_mean_token_accuracy": acc - 0.02 if valid else None,
            "full_valid_loss": loss + 0.08 if full else None,
            "full_valid_mean_token_accuracy": acc - 0.01 if full else None}


def seed_metrics(engine, job_id: str, steps: range, total: int) -> None:
    """One `metrics` event per step, with the server's message text."""
    from openft.jobs.hooks import step_message
    from openft.store.events import add_event

    with engine.begin() as conn:
        for s in steps:
            p = metric_point(s, total)
            add_event(conn, job_id, step_message(p), type="metrics", data=p)


# ---- the server and the browser ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "OPENFT_DATA_DIR": str(data_dir), "OPENFT_API_KEY": KEY, "OPENFT_HOST": "127.0.0.1",
           "OPENFT_PORT": str(port), "OPENFT_EMBEDDED_WORKER": "false"}
    log = open(data_dir.parent / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "openft", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(data_dir.parent / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start")


def open_page(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script(f"sessionStorage.setItem('openft.key', {KEY!r})")
    page = ctx.new_page()
    page.goto(url)
    return ctx, page


def mark_ms(page, name: str, ready_js: str, timeout: float = 30_000) -> float:
    page.wait_for_function(f"performance.getEntriesByName({name!r}).length > 0 && ({ready_js})", timeout=timeout)
    return page.evaluate(f"performance.getEntriesByName({name!r})[0].startTime")


# Watch every frame for the step in the chart's data; the time seen goes to window.__seenAt.
WATCH_STEP_JS = """(step) => {
  window.__seenAt = null;
  const check = () => {
    const el = document.querySelector('#chart-loss');
    const xs = el && el._uplot ? el._uplot.data[0] : [];
    if (xs.length && xs[xs.length - 1] >= step) window.__seenAt = Date.now(); else requestAnimationFrame(check);
  };
  check();
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--live", type=int, default=10, help="live points to time")
    ap.add_argument("--quick", action="store_true", help="1,000 steps, 100 jobs, 1 run, 2 live points")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.jobs, args.runs, args.live = 1000, 100, 1, 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    from openft.config import Settings
    from openft.store.db import make_engine

    tmp = Path(tempfile.mkdtemp(prefix="openft-dash-bench-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    proc, base = start_server(data_dir)
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url())
    results: dict[str, list[float]] = {k: [] for k in TARGETS_MS}
    try:
        t = time.perf_counter()
        seed_jobs(engine, args.jobs - 2)
        big = seed_jobs(engine, 1)[0]
        seed_metrics(engine, big, range(1, args.steps + 1), args.steps)
        live = seed_jobs(engine, 1, status="running")[0]
        seed_metrics(engine, live, range(1, 101), 1000)
        print(f"seeded {args.jobs} jobs and {args.steps + 100} metrics events in {time.perf_counter() - t:.1f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                          "--disable-dev-shm-usage"])
            version = browser.version
            for _ in range(args.runs):
                ctx, page = open_page(browser, f"{base}/#/jobs/{big}")
                mark_ms(page, "openft:charts", f"document.querySelector('#chart-loss')?.dataset.points === '{args.steps}' "
                                               f"&& document.querySelector('#chart-accuracy')?.dataset.points === '{args.steps}'")
                # both charts drawn: the later of their last draws (ms since navigation start); the
                # reward charts of a preference job stay empty (never drawn) on this SFT job
                results["job page"].append(page.evaluate(
                    "Math.max(...[...document.querySelectorAll('.chart-plot[data-drawn-at]')]"
                    ".map((e) => Number(e.dataset.drawnAt)))"))
                ctx.close()
                ctx, page = open_page(browser, f"{base}/#/jobs")
                results["jobs list"].append(mark_ms(page, "openft:jobs-list",
                                                    "document.querySelectorAll('#jobs-table tbody tr').length > 0"))
                ctx.close()
            ctx, page = open_page(browser, f"{base}/#/jobs/{live}")
            mark_ms(page, "openft:charts", "true")
            for i in range(args.live):
                time.sleep(random.uniform(0.2, 1.2))  # land anywhere in the page's poll cycle
                step = 101 + i
                page.evaluate(WATCH_STEP_JS, step)  # watching before the insert
                seed_metrics(engine, live, range(step, step + 1), 1000)
                committed = time.time() * 1000
                page.wait_for_function("window.__seenAt !== null", timeout=30_000)
                results["live point"].append(page.evaluate("window.__seenAt") - committed)
            ctx.close()
            browser.close()
    finally:
        engine.dispose()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ndashboard speed: headless Chromium {version}; CPU {cpu_line()}; "
          f"{args.runs} run(s){' (--quick)' if args.quick else ''}")
    labels = {"job page": f"job page, {args.steps:,}-step charts drawn",
              "jobs list": f"jobs list, {args.jobs:,} jobs, first page shown",
              "live point": "live job: new point on the chart after its metrics event"}
    print(f"{'measure':58} {'median':>9} {'worst':>9} {'target':>9}  ")
    ok = True
    for key, values in results.items():
        med, worst, target = statistics.median(values), max(values), TARGETS_MS[key]
        passed = worst < target
        ok &= passed
        print(f"{labels[key]:58} {med:7.0f}ms {worst:7.0f}ms {'<' + str(target):>7}ms  {'ok' if passed else 'SLOW'}")
    print(f"all_within_targets={ok}")


if __name__ == "__main__":
    main()
