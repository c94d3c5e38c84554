"""This machine's measured training pace: the trainer records it, earlier jobs of a model give it
to the next one's estimate, a probe measures it when there are none, and `estimated_finish`
follows the real time of the last steps."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from openft.data.estimate import read_pace, with_pace, write_pace
from openft.train.hooks import RecordingHooks
from openft.train.loop import train
from openft.train.spec import TrainSpec
from tests.support.data import write_chat_jsonl


@pytest.fixture
def db(settings):
    from openft.store.db import make_engine, migrate

    settings.ensure_dirs()
    eng = make_engine(settings.resolved_database_url())
    migrate(eng)
    yield eng
    eng.dispose()


def add_job(db, settings, base_model: str, status: str, folder, finished_at: int, method: dict | None = None,
            training_file: str = "file-x") -> str:
    from openft.ids import job_id
    from openft.store.db import jobs, next_seq

    jid = job_id()
    with db.begin() as conn:
        conn.execute(jobs.insert().values(
            id=jid, project_id="p", seq=next_seq(conn, jobs), model=base_model, base_model=base_model, status=status,
            created_at=finished_at - 100, finished_at=finished_at, training_file=training_file, result_files=[],
            seed=1, attempts=1, output_dir=str(folder),
            method=method or {"type": "supervised", "supervised": {"hyperparameters": {}}}))
    return jid


def test_the_trainer_records_its_pace(tmp_path, settings):
    data = write_chat_jsonl(tmp_path / "train.jsonl", 12)
    out = tmp_path / "run"
    result = train(TrainSpec(base_model="openft-tiny", train_file=str(data), output_dir=str(out), n_epochs=1,
                             batch_size=3, precision="fp32"), RecordingHooks(), settings)
    rec = read_pace(out)
    assert rec["base_model"] == "openft-tiny" and rec["method"] == "lora" and rec["device"] == "cpu"
    assert rec["steps"] == result.total_steps - 1  # the first step is warm-up, counted as setup
    assert 0 < rec["processed_tokens"] < result.trained_tokens and rec["seconds"] > 0 and rec["setup_seconds"] > 0


class Clock:
    """The trainer's clock, moved by the test: each step takes 1 s, then 10 s from step `slow_from`
    on (as when another job starts on the machine)."""

    def __init__(self, slow_from: int):
        self.t, self.slow_from = 1_000_000.0, slow_from

    def time(self) -> float:
        return self.t


class ClockedHooks(RecordingHooks):
    def __init__(self, clock: Clock):
        super().__init__()
        self.clock, self.now_at = clock, {}

    def on_metrics(self, data: dict) -> None:  # inside the step: its time passes
        super().on_metrics(data)
        self.clock.t += 10.0 if data["step"] >= self.clock.slow_from else 1.0

    def on_progress(self, step, total_steps, trained_tokens, estimated_finish) -> None:
        super().on_progress(step, total_steps, trained_tokens, estimated_finish)
        self.now_at[step] = self.clock.t


def test_estimated_finish_follows_the_recent_step_times(tmp_path, settings, monkeypatch):
    from openft.train import loop

    clock = Clock(slow_from=31)
    monkeypatch.setattr(loop, "time", clock)
    data = write_chat_jsonl(tmp_path / "train.jsonl", 48)
    hooks = ClockedHooks(clock)
    train(TrainSpec(base_model="openft-tiny", train_file=str(data), output_dir=str(tmp_path / "run"), n_epochs=1,
                    batch_size=1, precision="fp32"), hooks, settings)
    finish = {step: f for step, _, _, f in hooks.progress}
    assert finish[10] - hooks.now_at[10] == 38 * 1        # 38 steps left at 1 s
    # 6 steps left at 10 s: 60 s (the mean since the start said 21 s)
    assert finish[42] - hooks.now_at[42] == 6 * 10
    rec = read_pace(tmp_path / "run")
    assert rec["setup_seconds"] == 1.0 and rec["steps"] == 47 and rec["seconds"] == 29 + 18 * 10


def test_earlier_jobs_of_the_model_give_the_pace(tmp_path, db, settings):
    from openft.store.pace import history_pace

    def run_folder(name, tokens, seconds, setup, method="lora"):
        folder = tmp_path / name
        folder.mkdir()
        write_pace(folder, base_model="m", method=method, device="cpu", setup_seconds=setup, steps=10,
                   processed_tokens=tokens, seconds=seconds)
        return folder

    add_job(db, settings, "m", "succeeded", run_folder("a", 1000, 10, 4), 1000)
    add_job(db, settings, "m", "succeeded", run_folder("b", 3000, 10, 6), 2000)
    add_job(db, settings, "m", "failed", run_folder("c", 1, 100, 1), 3000)               # not a full run
    add_job(db, settings, "other", "succeeded", run_folder("d", 1, 100, 1), 3000)        # another model
    add_job(db, settings, "m", "succeeded", run_folder("e", 1, 100, 1, method="full"), 3000)  # another method
    add_job(db, settings, "m", "succeeded", tmp_path / "nothing-recorded", 3000)
    pace = history_pace(db, "m", "lora")
    assert pace.tokens_per_second == 4000 / 20 and pace.setup_seconds == 6 and pace.source == "2 earlier jobs of m"
    assert history_pace(db, "m", "full").source == "1 earlier job of m"
    assert history_pace(db, "nope") is None
    est = with_pace({"processed_tokens": 2000}, pace)
    assert est["estimated_seconds"] == 6 + 10 and est["pace_source"] == "2 earlier jobs of m"


@pytest.mark.slow
def test_without_history_a_probe_measures_the_pace_once(tmp_path, db, settings, monkeypatch):
    from openft.jobs import pace as job_pace
    from openft.jobs.pace import pace_for_job
    from openft.store.blobs import BlobStore
    from openft.store.db import files, jobs
    from openft.train import probe

    data = write_chat_jsonl(tmp_path / "t.jsonl", 40).read_bytes()
    sha, size = BlobStore(settings.data_dir / "blobs").put_bytes(data)
    with db.begin() as conn:
        conn.execute(files.insert().values(id="file-t", project_id="p", filename="t.jsonl", purpose="fine-tune",
                                           bytes=size, sha256=sha, created_at=1, status="processed", seq=1))
    jid = add_job(db, settings, "openft-tiny", "validating_files", tmp_path / "job", 1000, training_file="file-t")
    with db.connect() as conn:
        job = conn.execute(sa.select(jobs).where(jobs.c.id == jid)).one()
    monkeypatch.setattr(job_pace, "_probe_file", lambda *a: tmp_path / "pace" / "probe.json")  # none kept yet
    pace = pace_for_job(settings, db, job, 40, probe=True)   # what `measure pace` and the migration planner ask
    assert pace.source == "a 3-step probe" and pace.tokens_per_second > 0 and pace.setup_seconds > 0
    monkeypatch.setattr(probe, "run_probe", lambda *a, **k: pytest.fail("probed twice"))
    assert pace_for_job(settings, db, job, 40) == pace  # kept in <data_dir>/pace/ for the next jobs


def test_validation_never_waits_on_a_probe_the_table_says_it_is_a_table(tmp_path, db, settings, monkeypatch,
                                                                        tiny_model_dir):
    """No earlier job and no kept probe: the job is queued with the table's estimate, which names
    its source, and no probe is started (validation waited 2-5 minutes on one)."""
    from openft.jobs import pace as job_pace
    from openft.jobs.validate import validate_job
    from openft.store.blobs import BlobStore
    from openft.store.db import files, job_events, jobs
    from openft.train import probe

    monkeypatch.setattr(probe, "run_probe", lambda *a, **k: pytest.fail("validation started a probe"))
    monkeypatch.setattr(job_pace, "_probe_file", lambda *a: tmp_path / "pace" / "probe.json")  # none kept
    sha, size = BlobStore(settings.layout.blobs).put_bytes(write_chat_jsonl(tmp_path / "t.jsonl", 40).read_bytes())
    with db.begin() as conn:
        conn.execute(files.insert().values(id="file-t", project_id="p", filename="t.jsonl", purpose="fine-tune",
                                           bytes=size, sha256=sha, created_at=1, status="processed", seq=1))
    jid = add_job(db, settings, "openft-tiny", "validating_files", tmp_path / "job", 1000, training_file="file-t")
    with db.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == jid).values(finished_at=None))
    assert validate_job(settings, db, jid) == "queued"
    with db.connect() as conn:
        said = conn.execute(sa.select(job_events.c.message).where(job_events.c.job_id == jid)).scalars().all()
    assert not any(m.startswith("Preparing base model") for m in said), said   # converted already: no wait
    (est,) = [m for m in said if m.startswith("Training file: ")]
    assert "estimated training time on this machine: " in est
    assert est.endswith("(from a table for 3M-parameter models on CPU, until this job's own steps are measured)"), est


def test_the_table_pace_scales_with_model_size_and_device():
    from openft.data.estimate import table_pace

    small, big = table_pace(135_000_000, "cpu"), table_pace(1_350_000_000, "cpu")
    assert small.tokens_per_second == pytest.approx(10 * big.tokens_per_second)
    assert table_pace(135_000_000, "cuda").tokens_per_second > 100 * small.tokens_per_second
    assert "135M-parameter models on CPU" in small.source and "1.4B-parameter" in big.source
    assert table_pace(None, "cpu") is None


def test_validation_says_when_it_waits_for_a_model_conversion(tmp_path, settings, tiny_model_dir):
    """The one wait validation may still have (the packaged model's one-time conversion, for its
    tokenizer) is announced in an event before it starts; a converted model is not."""
    from openft.models.registry import needs_conversion

    assert needs_conversion(settings.model_copy(update={"model_cache_dir": tmp_path / "empty"}), "openft-tiny")
    assert not needs_conversion(settings, "openft-tiny")   # built in the shared cache
    assert not needs_conversion(settings, "no-such-model")
