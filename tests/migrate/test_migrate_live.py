"""`openft migrate from-openai` between two real servers: a source openft playing OpenAI (jobs
trained on `openft-tiny`) and an empty target, through the CLI, the official SDK on both sides.

End to end (same settings, identical file bytes), the dry run, resuming after interruptions
without duplicates, and faults (a wrong key, deleted files, a dropped connection, 429s)."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import invoke, migrate
from tests.support.proxy import Proxy, rate_limit_first
from tests.support.servers import ADMIN_KEY

pytestmark = pytest.mark.slow   # trains three tiny jobs on the source; runs in CI

MAP = ("--base-model", "openft-tiny=openft-tiny")


def target_state(target):
    api = target.client()
    jobs = list(api.fine_tuning.jobs.list(limit=100))
    files = list(api.files.list())
    return api, jobs, files


def by_source(jobs):
    out: dict[str, list] = {}
    for j in jobs:
        out.setdefault((j.metadata or {}).get("migrated_from"), []).append(j)
    return out


def test_end_to_end_then_again_changes_nothing(source, target):
    src = source["server"]
    result = migrate(*MAP, source_url=src.base_url)
    out = result.stdout
    assert f"{source['a'].id}: migrated as ftjob-" in out and f"{source['b'].id}: migrated as ftjob-" in out
    assert source["c"] not in out            # failed jobs only with --all-statuses
    assert "2 job(s): 2 migrated" in out
    api, jobs, files = target_state(target)
    twins = by_source(jobs)
    assert set(twins) == {source["a"].id, source["b"].id} and all(len(v) == 1 for v in twins.values())
    for key in ("a", "b"):
        s, t = source[key], twins[source[key].id][0]
        assert t.model == "openft-tiny"
        assert t.method.type == "supervised"
        assert t.method.supervised.hyperparameters == s.method.supervised.hyperparameters
        assert (t.suffix, t.seed) == (s.suffix, s.seed)
        assert t.metadata == {**(s.metadata or {}), "migrated_from": s.id}
        for field in ("training_file", "validation_file"):
            sf, tf = getattr(s, field), getattr(t, field)
            assert (sf is None) == (tf is None), field
            if sf:
                assert api.files.content(tf).content == source["api"].files.content(sf).content
                assert api.files.retrieve(tf).filename.startswith(f"migrated-{sf}-")
    assert twins[source["a"].id][0].suffix == "alpha" and twins[source["a"].id][0].metadata["team"] == "support"
    # again: nothing new on the target
    again = migrate(*MAP, source_url=src.base_url).stdout
    assert again.count("already migrated as ftjob-") == 2 and "2 job(s): 2 already migrated" in again
    _, jobs2, files2 = target_state(target)
    assert len(jobs2) == 2 and len(files2) == len(files) == 3


def test_dry_run_prints_the_plan_and_creates_nothing(source, target):
    src = source["server"]
    a = source["a"]
    # pace: this machine's earlier jobs of openft-tiny are in the source's data folder
    out = migrate(*MAP, "--dry-run", source_url=src.base_url, pre=("--data-dir", str(src.data_dir))).stdout
    assert "Plan (dry run" in out and "2 job(s): 2 to migrate" in out
    assert f"{a.id}  succeeded  openft-tiny -> openft-tiny (mapped openft-tiny=openft-tiny)" in out
    size = source["api"].files.retrieve(a.training_file).bytes
    assert f"training file {a.training_file}  train.jsonl  {size:,} bytes  12 examples, " in out
    assert f"validation file {a.validation_file}  valid.jsonl" in out and " tokens" in out
    assert "n_epochs=1, batch_size=4, learning_rate_multiplier=2.0" in out and "suffix 'alpha'; seed 7" in out
    times = [line for line in out.splitlines() if "time on this machine:" in line]
    assert len(times) == 2 and all("pace from" in t and "earlier job" in t for t in times), times
    # without a measured pace the time is unknown, and the default base is named as such
    plain = migrate("--dry-run", "--job", a.id, "--default-base", "openft-tiny", source_url=src.base_url).stdout
    assert "-> openft-tiny (default base (no --base-model mapping for it))" in plain
    assert "time on this machine: unknown (no pace measured on this machine" in plain
    # --all-statuses adds the failed job C, whose file is gone: the plan says so and exits 1
    every = migrate(*MAP, "--dry-run", "--all-statuses", source_url=src.base_url, code=1)
    assert "3 job(s): 2 to migrate, 1 failed" in every.stdout
    assert f"failed: {source['c']}: its training file" in every.stderr
    # --probe: no earlier job, so a short training probe measures this machine's pace
    probed = migrate(*MAP, "--dry-run", "--probe", "--job", a.id, source_url=src.base_url).stdout
    assert "pace from a 3-step probe" in probed, probed
    _, jobs, files = target_state(target)
    assert jobs == [] and files == []


def test_interrupted_runs_resume_without_duplicates(source, target):
    src, a, b = source["server"], source["a"], source["b"]
    # 1. the connection drops when the job is to be created (its files are already up): A fails
    drop_create = lambda m, p: "drop" if m == "POST" and p.startswith("/v1/fine_tuning/jobs") else None  # noqa: E731
    with Proxy(target.base_url, drop_create) as flaky:
        first = migrate(*MAP, "--job", a.id, source_url=src.base_url, pre=("--base-url", flaky.base_url), code=1)
    assert f"failed: {a.id}: the target ({flaky.base_url}) is not reachable" in first.stderr
    _, jobs, files = target_state(target)
    assert jobs == [] and len(files) == 2
    # 2. the job is created but the answer is lost: not retried blind, found by migrated_from
    lose_create = lambda m, p: "lost" if m == "POST" and p.startswith("/v1/fine_tuning/jobs") else None  # noqa: E731
    with Proxy(target.base_url, lose_create) as flaky:
        second = migrate(*MAP, "--job", a.id, source_url=src.base_url, pre=("--base-url", flaky.base_url))
    assert f"{a.id}: migrated as ftjob-" in second.stdout and "already on the target" in second.stdout
    # 3. all jobs: A is skipped, B migrated; no file uploaded twice, one target job per source job
    third = migrate(*MAP, source_url=src.base_url).stdout
    assert f"{a.id}: already migrated as" in third and f"{b.id}: migrated as" in third
    _, jobs, files = target_state(target)
    assert sorted(map(len, by_source(jobs).values())) == [1, 1] and len(files) == 3


def test_faults_are_one_line_each_and_the_run_goes_on(source, target):
    src, a = source["server"], source["a"]
    wrong = migrate(*MAP, source_url=src.base_url, key="sk-wrong", code=1)
    assert wrong.stderr.strip().startswith("error: the source (") and "refused the API key (401)" in wrong.stderr
    assert "\n" not in wrong.stderr.strip() and "Traceback" not in wrong.output
    # C's training file was deleted at the source, and there is no such job as ftjob-nope: A goes on
    res = migrate(*MAP, "--job", source["c"], "--job", "ftjob-nope", "--job", a.id, source_url=src.base_url, code=1)
    assert f"{source['c']}: its training file" in res.stderr and "no longer exists at the source" in res.stderr
    assert "ftjob-nope: no such fine-tuning job at the source" in res.stderr
    assert f"{a.id}: migrated as" in res.stdout and "3 job(s): 1 migrated, 2 failed" in res.stdout
    assert "Traceback" not in res.output
    # the network fails while a file comes down: that job fails, the next one goes on
    b = source["b"]
    cut = lambda m, p: "drop" if p.startswith(f"/v1/files/{b.training_file}/content") else None  # noqa: E731
    with Proxy(src.base_url, cut) as flaky:
        res = migrate(*MAP, source_url=flaky.base_url, code=1)
    assert f"failed: {b.id}: the source ({flaky.base_url}) is not reachable" in res.stderr
    assert f"{a.id}: already migrated" in res.stdout
    _, jobs, _ = target_state(target)
    assert [j.metadata["migrated_from"] for j in jobs] == [a.id]
    # a source that will not hand out a fine-tune file (as OpenAI has done): that job fails, with a way out
    refuse = (400, {"Content-Type": "application/json"}, b'{"error": {"message": "Not allowed to download files of '
              b'purpose: fine-tune", "type": "invalid_request_error", "param": null, "code": null}}')
    no_dl = lambda m, p: refuse if p.startswith(f"/v1/files/{b.training_file}/content") else None  # noqa: E731
    with Proxy(src.base_url, no_dl) as strict:
        res = migrate(*MAP, "--job", b.id, source_url=strict.base_url, code=1)
    assert (f"failed: {b.id}: the source refuses to hand out its training file {b.training_file} (400: Not allowed "
            "to download files of purpose: fine-tune); upload your own copy") in res.stderr
    # a target that refuses our key says which side
    bad_target = migrate(*MAP, source_url=src.base_url, pre=("--api-key", "sk-nope"), code=1)
    assert "error: the target (" in bad_target.stderr and "refused the API key (401)" in bad_target.stderr


def test_a_source_that_answers_429_then_recovers(source, target):
    src = source["server"]
    with Proxy(src.base_url, rate_limit_first(3, retry_after=1)) as limited:
        res = migrate(*MAP, "--max-retries", "5", source_url=limited.base_url)
        log = list(limited.log)
    assert "2 job(s): 2 migrated" in res.stdout
    statuses = [s for _, _, _, s in log]
    assert statuses[:3] == [429, 429, 429] and statuses[3] == 200
    # each retry waited for the Retry-After (1 s), not the SDK's shorter backoff
    gaps = [log[i + 1][0] - log[i][0] for i in range(3)]
    assert all(g >= 0.9 for g in gaps), gaps
    _, jobs, _ = target_state(target)
    assert len(jobs) == 2


def test_a_dpo_job_is_skipped_or_migrated_as_dpo_as_the_target_allows(source, target):
    """The source job B, shown as a DPO job by the proxy: a target without DPO says so and gets no
    file; one with DPO gets a dpo job with the same beta."""
    b = source["b"]

    def as_dpo(body: bytes) -> bytes:
        job = json.loads(body)
        hp = {**job["method"]["supervised"]["hyperparameters"], "beta": 0.25}
        job["method"] = {"type": "dpo", "dpo": {"hyperparameters": hp}}
        return json.dumps(job).encode()

    rule = lambda m, p: as_dpo if m == "GET" and p.startswith(f"/v1/fine_tuning/jobs/{b.id}") else None  # noqa: E731
    with Proxy(source["server"].base_url, rule) as shown:
        res = migrate(*MAP, "--job", b.id, source_url=shown.base_url)
    _, jobs, files = target_state(target)
    if "skipped" in res.stdout:
        assert f"{b.id}: skipped: openft does not support dpo fine-tuning (the target says: " in res.stdout
        assert "1 job(s): 1 skipped" in res.stdout and jobs == [] and files == []
    else:
        assert f"{b.id}: migrated as" in res.stdout and jobs[0].method.type == "dpo"
        assert jobs[0].method.dpo.hyperparameters.beta == 0.25


def test_unknown_base_in_the_map_fails_that_job_with_the_targets_words(source, target):
    res = migrate("--base-model", "openft-tiny=no-such-base", "--job", source["a"].id,
                  source_url=source["server"].base_url, code=1)
    assert "no-such-base" in res.stderr and "(param: model)" in res.stderr
    again = invoke("migrate", "from-openai", "--source-base-url", source["server"].base_url, "--map-file", "nope.json")
    assert again.exit_code == 1 and "error: --map-file nope.json" in again.stderr
    assert json.loads(json.dumps(target.client().fine_tuning.jobs.list().model_dump()))["data"] == []


# ------------------------------------------------------------------ migrate record

def record(*args: str, source_url: str, key: str = ADMIN_KEY):
    return invoke("migrate", "record", "--source-base-url", source_url, "--source-api-key", key, "--max-retries", "0",
                  "--max-tokens", "6", "--temperature", "1", "--seed", "3", *args)


def chats(log) -> int:
    return sum(1 for _, m, p, _ in log if m == "POST" and p.endswith("/chat/completions"))


def test_record_resumes_from_a_half_written_output(source, tmp_path):
    model = source["a"].fine_tuned_model
    prompts = tmp_path / "prompts.txt"
    chat = {"messages": [{"role": "system", "content": "Classify the review."},
                         {"role": "user", "content": "Review: superb."}, {"role": "assistant", "content": "old"}]}
    prompts.write_text("Review: great.\nReview: awful.\n" + json.dumps(chat) + "\nReview: fine.\nReview: great.\n")
    out = tmp_path / "answers.jsonl"
    with Proxy(source["server"].base_url) as counting:
        first = record("--source-model", model, "--prompts", str(prompts), "-o", str(out), "--concurrency", "2",
                       source_url=counting.base_url)
        assert first.exit_code == 0, first.output
        assert chats(counting.log) == 5 and "5 of 5 prompt(s) answered (5 now, 0 before)" in first.stdout
        lines = out.read_text().splitlines()
        out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])   # killed mid-line
        second = record("--source-model", model, "--prompts", str(prompts), "-o", str(out), source_url=counting.base_url)
        assert second.exit_code == 0, second.output
        assert chats(counting.log) == 5 + 3 and "(3 now, 2 before)" in second.stdout
    again = out.read_text().splitlines()
    assert again[:2] == lines[:2] and len(again) == 5
    asked = sorted(json.dumps(json.loads(x)["messages"][:-1]) for x in again)
    from openft.migrate.record import read_prompts

    assert asked == sorted(json.dumps(m) for m in read_prompts(prompts))   # each prompt once, "great" twice
    assert all(json.loads(x)["messages"][-1]["role"] == "assistant" for x in again)
    from openft.data.validate import validate_file

    rep = validate_file(out, min_examples=1)
    assert rep.ok and rep.n_examples == 5, [str(e) for e in rep.errors]


def test_record_from_the_sources_validation_file_through_429s(source, tmp_path):
    a, out = source["a"], tmp_path / "from-valid.jsonl"
    with Proxy(source["server"].base_url, rate_limit_first(2, retry_after=1)) as limited:
        res = record("--source-model", a.fine_tuned_model, "--from-validation-file", a.validation_file, "-o", str(out),
                     "--max-retries", "3", source_url=limited.base_url)
        assert res.exit_code == 0, res.output
        assert [s for _, _, _, s in limited.log][:2] == [429, 429]
    valid = source["api"].files.content(a.validation_file).content.decode().splitlines()
    want = sorted(json.dumps(json.loads(x)["messages"][:-1]) for x in valid)
    assert sorted(json.dumps(json.loads(x)["messages"][:-1]) for x in out.read_text().splitlines()) == want


def test_record_faults_are_one_line(source, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    url = source["server"].base_url
    gone = record("--source-model", "ft:openft-tiny:openft:gone:nope", "--prompts", str(prompts), "-o",
                  str(tmp_path / "o.jsonl"), source_url=url)
    assert gone.exit_code == 1 and "does not exist (any more)" in gone.stderr.splitlines()[-1]
    assert gone.stderr.strip().splitlines()[-1].startswith("error: the source model ft:openft-tiny:openft:gone:nope")
    wrong = record("--source-model", source["a"].fine_tuned_model, "--prompts", str(prompts), "-o",
                   str(tmp_path / "o.jsonl"), source_url=url, key="sk-wrong")
    assert wrong.exit_code == 1 and "refused the API key (401)" in wrong.stderr
    missing = record("--source-model", source["a"].fine_tuned_model, "--from-validation-file", "file-gone", "-o",
                     str(tmp_path / "o.jsonl"), source_url=url)
    assert missing.exit_code == 1 and "error: the source has no file file-gone" in missing.stderr
    assert "Traceback" not in gone.output + wrong.output + missing.output
