"""openft.migrate without a server: the base model mapping, what a source job becomes, the prompts
`record` reads and how it finds what an interrupted run already answered."""

from __future__ import annotations

import json

import pytest
from openai.types.fine_tuning import FineTuningJob

from openft.errors import OpenFTError
from openft.migrate.plan import ModelMap, plan_job
from openft.migrate.record import answered_counts, prompt_key, read_prompts


def openai_job(**over) -> FineTuningJob:
    """A job as OpenAI returns it (resolved hyperparameters, `user_provided_suffix`)."""
    body = {"id": "ftjob-src1", "object": "fine_tuning.job", "created_at": 1, "model": "gpt-4o-mini-2024-07-18",
            "organization_id": "org-x", "result_files": [], "seed": 42, "status": "succeeded",
            "training_file": "file-train", "validation_file": "file-valid",
            "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:acme:reviews:AbC123", "user_provided_suffix": "reviews",
            "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 1.8}}},
            "metadata": {"team": "support"}}
    body.update(over)
    return FineTuningJob.model_validate(body)


def test_plan_keeps_resolved_settings_and_adds_migrated_from():
    plan = plan_job(openai_job(), ModelMap(default="smollm2-135m-instruct"))
    assert plan.target_model == "smollm2-135m-instruct" and "default base" in plan.target_why
    # "auto" in method, resolved at the (deprecated) top level: the concrete value wins
    assert plan.hyperparameters == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}
    assert plan.method_object() == {"type": "supervised", "supervised": {"hyperparameters": plan.hyperparameters}}
    assert (plan.suffix, plan.seed) == ("reviews", 42)
    assert plan.metadata == {"team": "support", "migrated_from": "ftjob-src1"}
    assert plan.files() == [("training", "file-train"), ("validation", "file-valid")]
    assert plan.skip is None


def test_suffix_from_the_model_name_when_the_source_gives_none():
    job = openai_job(user_provided_suffix=None, fine_tuned_model="ft:gpt-4o-mini-2024-07-18:acme:my-bot:XyZ")
    assert plan_job(job, ModelMap()).suffix == "my-bot"
    assert plan_job(openai_job(user_provided_suffix=None, fine_tuned_model=None), ModelMap()).suffix is None


def test_dpo_keeps_beta_and_reinforcement_is_skipped_with_a_reason():
    dpo = plan_job(openai_job(method={"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.2, "n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}}}), ModelMap())
    assert dpo.method == "dpo" and dpo.hyperparameters["beta"] == 0.2 and dpo.skip is None
    rft = plan_job(openai_job(method={"type": "reinforcement", "reinforcement": {"grader": {
        "type": "string_check", "name": "g", "input": "{{sample.output_text}}", "reference": "y", "operation": "eq"}}}), ModelMap())
    assert rft.skip and "reinforcement" in rft.skip


def test_sixteen_metadata_keys_drop_one_and_say_which():
    md = {f"k{i:02d}": str(i) for i in range(16)}
    plan = plan_job(openai_job(metadata=md), ModelMap())
    assert len(plan.metadata) == 16 and plan.metadata["migrated_from"] == "ftjob-src1"
    assert "k15" not in plan.metadata and any("'k15' dropped" in n for n in plan.notes)


def test_model_map_exact_beats_pattern_and_ft_models_use_their_base(tmp_path):
    mapping = tmp_path / "map.toml"
    mapping.write_text('[models]\n"gpt-4o-mini*" = "smollm2-135m-instruct"\n"gpt-4.1" = "my-local"\n')
    mm = ModelMap.build(["gpt-4o-mini-2024-07-18=openft-tiny"], mapping, "default-base")
    assert mm.target("gpt-4o-mini-2024-07-18")[0] == "openft-tiny"        # the flag, exact
    assert mm.target("gpt-4o-mini-2025-01-01")[0] == "smollm2-135m-instruct"  # the file's pattern
    assert mm.target("ft:gpt-4.1:acme:x:id")[0] == "my-local"              # continued from ft:BASE
    target, why = mm.target("gpt-3.5-turbo")
    assert target == "default-base" and "default" in why
    (tmp_path / "map.json").write_text(json.dumps({"a": "b"}))
    assert ModelMap.build(None, tmp_path / "map.json", "d").target("a")[0] == "b"


@pytest.mark.parametrize("content, needle", [("{nope", "not valid JSON"), ('{"a": 1}', "table of source model")])
def test_bad_map_file_is_one_message(tmp_path, content, needle):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(OpenFTError, match=needle):
        ModelMap.build(None, tmp_path / "m.json", "d")
    with pytest.raises(OpenFTError, match="SOURCE=TARGET"):
        ModelMap.build(["no-equals-sign"], None, "d")


def test_read_prompts_plain_text_chat_and_records(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join([
        "What is 2+2?",
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "old answer", "weight": 1}]}),
        json.dumps([{"role": "user", "content": [{"type": "text", "text": "parts"}]}]),
        json.dumps({"prompt": "Complete me", "completion": "x"}),
        "",
    ]))
    assert read_prompts(f) == [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "parts"}],
        [{"role": "user", "content": "Complete me"}]]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": "only"}]}))
    with pytest.raises(OpenFTError, match="bad.jsonl:1: not a prompt"):
        read_prompts(tmp_path / "bad.jsonl")


def test_answered_counts_cuts_a_half_written_line(tmp_path):
    q = [{"role": "user", "content": "q"}]
    line = json.dumps({"messages": [*q, {"role": "assistant", "content": "a"}]})
    out = tmp_path / "out.jsonl"
    out.write_text(line + "\n" + line + "\n" + line[:10])
    assert answered_counts(out) == {prompt_key(q): 2}
    assert out.read_text() == line + "\n" + line + "\n"
    out.write_text("not ours\n")
    with pytest.raises(OpenFTError, match="not one of ours"):
        answered_counts(out)


def test_the_sources_openai_key_is_never_sent_to_the_target(tmp_path, monkeypatch):
    """OPENAI_API_KEY is the source's key in `openft migrate`: without OPENFT_API_KEY / --api-key
    the target's key comes from the data folder, or the run stops before any request."""
    from typer.testing import CliRunner

    from openft.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-source-key")
    monkeypatch.delenv("OPENFT_API_KEY", raising=False)
    monkeypatch.setenv("OPENFT_DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["migrate", "from-openai", "--source-base-url", "http://127.0.0.1:9/v1"],
                             prog_name="openft")
    assert res.exit_code == 1 and res.stderr.startswith("error: no API key"), res.output
    res = CliRunner().invoke(app, ["migrate", "from-openai"], prog_name="openft", env={"OPENAI_API_KEY": ""})
    assert res.exit_code == 1 and "no source API key" in res.stderr, res.output
