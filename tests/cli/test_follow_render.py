"""Progress rendering for `openft jobs follow`, driven by recorded event lists (newest first, as listed)."""

from __future__ import annotations

from openft.cli.follow import FollowState, format_eta, format_event

T0 = 1_700_000_000


def ev(i: int, t: int, message: str, *, type: str = "message", data: dict | None = None, level: str = "info") -> dict:
    return {"id": f"ftevent-{i}", "object": "fine_tuning.job.event", "created_at": T0 + t, "level": level,
            "message": message, "type": type, "data": data}


def metrics(i: int, t: int, step: int, total: int, loss: float, valid: float | None = None) -> dict:
    data = {"step": step, "train_loss": loss, "train_mean_token_accuracy": 0.5, "total_steps": total}
    msg = f"Step {step}/{total}: training loss={loss:.4f}"
    if valid is not None:
        data.update(valid_loss=valid, valid_mean_token_accuracy=0.6)
        msg += f", validation loss={valid:.4f}"
    return ev(i, t, msg, type="metrics", data=data)


RECORDED = [  # oldest first here; the API lists them newest first
    ev(1, 0, "Created fine-tuning job: ftjob-abc"),
    ev(2, 0, "Validating training file: file-t and validation file: file-v"),
    ev(3, 1, "Files validated, moving job to queued state"),
    ev(4, 2, "Fine-tuning job started"),
    metrics(5, 12, 1, 10, 2.5),
    metrics(6, 14, 2, 10, 2.1),
    metrics(7, 16, 3, 10, 1.8),
    metrics(8, 18, 4, 10, 1.5),
    metrics(9, 20, 5, 10, 1.2, valid=1.4),
    ev(10, 21, "Checkpoint created at step 5"),
]
LATER = [metrics(11, 22, 6, 10, 1.0), ev(12, 23, "Slow step", level="warn")]
END = [metrics(13, 30, 10, 10, 0.5, valid=0.7), ev(14, 31, "New fine-tuned model created"),
       ev(15, 31, "The job has successfully completed")]


def newest_first(events):
    return list(reversed(events))


def test_events_come_out_oldest_first_once():
    state = FollowState()
    out = state.add_events(newest_first(RECORDED))
    assert [e["id"] for e in out] == [e["id"] for e in RECORDED]
    # the next poll returns the page again with two new events on top: only those come out
    out = state.add_events(newest_first(RECORDED + LATER))
    assert [e["id"] for e in out] == ["ftevent-11", "ftevent-12"]
    assert state.add_events(newest_first(RECORDED + LATER)) == []


def test_same_second_events_keep_the_servers_order():
    state = FollowState()
    out = state.add_events(newest_first(RECORDED[:2]))  # both at t=0
    assert [e["message"][:7] for e in out] == ["Created", "Validat"]


def test_metrics_drive_step_loss_and_rate_eta():
    state = FollowState()
    state.add_events(newest_first(RECORDED))
    state.update_job({"status": "running", "estimated_finish": None, "fine_tuned_model": None})
    assert (state.step, state.total_steps, state.train_loss, state.valid_loss) == (5, 10, 1.2, 1.4)
    # steps 1..5 took 8 s (2 s/step): 5 steps left = 10 s, 1 s already gone since the last metrics
    assert state.eta(now=T0 + 21) == 9.0
    f = state.fields(now=T0 + 21)
    assert f == {"description": "running", "completed": 5, "total": 10, "loss": "1.2000 (valid 1.4000)",
                 "eta": "0:09"}


def test_server_estimate_wins_over_the_rate():
    state = FollowState()
    state.add_events(newest_first(RECORDED))
    state.update_job({"status": "running", "estimated_finish": T0 + 100})
    assert state.eta(now=T0 + 40) == 60.0


def test_no_eta_before_two_steps():
    state = FollowState()
    state.add_events(newest_first(RECORDED[:5]))
    state.update_job({"status": "running"})
    assert state.step == 1
    assert state.eta(now=T0 + 13) is None
    assert state.fields(now=T0 + 13)["eta"] == "-"


def test_a_late_older_metrics_event_does_not_move_the_bar_back():
    state = FollowState()
    state.add_events(newest_first([metrics(20, 5, 7, 10, 0.9)]))
    state.add_events(newest_first([metrics(21, 4, 6, 10, 1.1)]))
    assert (state.step, state.train_loss) == (7, 0.9)


def test_waiting_job_fields():
    state = FollowState()
    state.add_events(newest_first(RECORDED[:3]))
    state.update_job({"status": "queued"})
    assert state.fields(now=T0) == {"description": "queued", "completed": 0, "total": None, "loss": "-", "eta": "-"}
    assert not state.done


def test_summary_lines():
    state = FollowState()
    state.add_events(newest_first(RECORDED + LATER + END))
    state.update_job({"status": "succeeded", "fine_tuned_model": "ft:openft-tiny:openft:demo:abc12345"})
    assert state.done and state.eta(now=T0 + 40) == 0.0
    assert state.summary() == "Job succeeded. Fine-tuned model: ft:openft-tiny:openft:demo:abc12345"
    failed = FollowState()
    failed.update_job({"status": "failed", "error": {"code": "invalid_n_examples", "param": "training_file",
                                                     "message": "train.jsonl: 3 examples; at least 10 are needed"}})
    assert failed.summary() == "Job failed: train.jsonl: 3 examples; at least 10 are needed (invalid_n_examples)"
    paused = FollowState()
    paused.update_job({"status": "paused"})
    assert "resume" in paused.summary() and not paused.done


def test_sdk_objects_work_like_dicts():
    from openai.types.fine_tuning import FineTuningJobEvent

    state = FollowState()
    objs = [FineTuningJobEvent(**e) for e in newest_first(RECORDED)]
    assert [e.id for e in state.add_events(objs)] == [e["id"] for e in RECORDED]
    assert state.step == 5


def test_format_helpers():
    assert format_eta(None) == "-"
    assert format_eta(12.4) == "0:12"
    assert format_eta(3725) == "1:02:05"
    assert format_eta(-3) == "0:00"
    line = format_event(ev(1, 0, "Slow", level="warn"))
    assert line.endswith("] WARN: Slow") and line.startswith("[")
