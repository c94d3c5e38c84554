"""The training loop end to end on the tiny model: outputs, checkpoints, resume, reproducibility."""

import csv
import json
import os
import re

import pytest

from openft.errors import DataError
from openft.train.hooks import RecordingHooks, TrainHooks
from openft.train.loop import train
from openft.train.spec import TrainSpec
from tests.support.data import chat_rows, prompt_completion_rows, write_jsonl


def write_data(path, n, *, legacy=False, seed=0):
    rows = prompt_completion_rows(n, seed=seed) if legacy else chat_rows(n, seed=seed, system="Classify the review.")
    return str(write_jsonl(path, rows))


def spec_for(tmp, name, **kw):
    base = dict(base_model="openft-tiny", train_file=str(tmp / "train.jsonl"), output_dir=str(tmp / name),
                n_epochs=2, batch_size=4, learning_rate_multiplier=5.0, seed=7, precision="fp32")
    base.update(kw)
    return TrainSpec(**base)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    write_data(tmp / "train.jsonl", 16)
    write_data(tmp / "valid.jsonl", 6, seed=1)
    return tmp


@pytest.fixture(scope="module")
def baseline(run_dir, model_cache):
    """One uninterrupted run: 16 examples, batch 4, 2 epochs = 8 steps; checkpoint every 3 steps."""
    from openft.config import Settings

    settings = Settings(data_dir=run_dir / "data", model_cache_dir=model_cache)
    hooks = RecordingHooks()
    spec = spec_for(run_dir, "baseline", valid_file=str(run_dir / "valid.jsonl"), checkpoint_every_steps=3,
                    keep_checkpoints=2)
    result = train(spec, hooks, settings)
    return settings, spec, hooks, result


def test_run_outputs(baseline):
    settings, spec, hooks, result = baseline
    assert isinstance(hooks, TrainHooks)
    assert result.status == "succeeded" and result.total_steps == 8 and result.step == 8
    assert result.hyperparameters == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5.0}
    assert hooks.resolved == [result.hyperparameters]
    assert [m["step"] for m in hooks.metrics] == list(range(1, 9))
    for m in hooks.metrics:
        assert m["total_steps"] == 8 and m["train_loss"] > 0 and 0 <= m["train_mean_token_accuracy"] <= 1
    # the adapter learns: the loss goes down on this easy data
    assert hooks.metrics[-1]["train_loss"] < hooks.metrics[0]["train_loss"]
    # full validation at each epoch end (steps 4 and 8), small-batch validation there too
    assert {m["step"] for m in hooks.metrics if "full_valid_loss" in m} == {4, 8}
    assert all("valid_loss" in m for m in hooks.metrics if m["step"] in (4, 8))
    # progress: tokens grow, an estimated finish time
    steps = [p[0] for p in hooks.progress]
    assert steps == list(range(1, 9)) and hooks.progress[-1][2] == result.trained_tokens > 0
    assert all(p[3] is not None for p in hooks.progress)
    # results CSV
    with open(result.results_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert float(rows[3]["valid_loss"]) == pytest.approx(hooks.metrics[3]["valid_loss"], rel=1e-5)
    out = spec.output_dir
    assert json.load(open(os.path.join(out, "spec.json")))["base_model"] == "openft-tiny"
    assert json.load(open(os.path.join(out, "meta.json")))["n_train_examples"] == 16


def test_checkpoints_every_n_steps_and_epoch_end_pruned(baseline):
    _, spec, hooks, result = baseline
    assert [c[0] for c in hooks.checkpoints] == [3, 4, 6, 8]
    assert [c[1] for c in hooks.checkpoints] == [1, 1, 2, 2]
    root = os.path.join(spec.output_dir, "checkpoints")
    assert sorted(os.listdir(root)) == ["step-6", "step-8"]  # keep_checkpoints=2
    assert hooks.removed == [os.path.join(root, "step-3"), os.path.join(root, "step-4")]
    ck = hooks.checkpoints[-1][2]
    assert set(os.listdir(os.path.join(ck, "trainer_state"))) >= {"optimizer.pt", "scheduler.pt", "rng.pt", "state.json"}
    assert hooks.checkpoints[-1][3]["step"] == 8


def test_checkpoint_and_model_load_with_plain_peft(baseline):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings, spec, hooks, result = baseline
    for folder in (hooks.checkpoints[-1][2], result.model_dir):
        assert os.path.exists(os.path.join(folder, "adapter_config.json"))
        base = AutoModelForCausalLM.from_pretrained(json.load(open(os.path.join(folder, "adapter_config.json")))
                                                    ["base_model_name_or_path"])
        model = PeftModel.from_pretrained(base, folder)
        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        with torch.no_grad():
            assert model(input_ids=ids).logits.shape[-1] == base.config.vocab_size


def test_same_seed_same_losses_and_resume_reproduces_the_curve(baseline, run_dir):
    settings, _, base_hooks, _ = baseline
    valid = str(run_dir / "valid.jsonl")
    # interrupted at step 5 (a pause writes a checkpoint there), then resumed to the end
    first = RecordingHooks(pause_after=5)
    spec = spec_for(run_dir, "resumed", valid_file=valid)
    r1 = train(spec, first, settings)
    assert r1.status == "paused" and r1.step == 5 and r1.model_dir is None
    assert r1.checkpoint_dir.endswith("step-5") and first.checkpoints[-1][0] == 5
    second = RecordingHooks()
    r2 = train(spec, second, settings, resume_from=r1.checkpoint_dir)
    assert r2.status == "succeeded" and [m["step"] for m in second.metrics] == [6, 7, 8]
    assert r2.trained_tokens == baseline[3].trained_tokens
    combined = {**first.losses(), **second.losses()}
    expected = base_hooks.losses()
    assert combined.keys() == expected.keys()
    for s in expected:
        assert combined[s] == pytest.approx(expected[s], rel=1e-4), s
    assert second.metrics[-1]["full_valid_loss"] == pytest.approx(base_hooks.metrics[-1]["full_valid_loss"], rel=1e-4)
    with open(r2.results_csv) as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 9))
    # a different seed gives a different curve
    other = RecordingHooks(cancel_after=2)
    train(spec_for(run_dir, "seed8", seed=8), other, settings)
    assert other.losses()[2] != pytest.approx(expected[2], rel=1e-6)


def test_cancel_stops_promptly_legacy_data_and_continue_adapter(baseline, run_dir):
    settings, _, _, base_result = baseline
    write_data(run_dir / "legacy.jsonl", 12, legacy=True)
    hooks = RecordingHooks(cancel_after=1)
    r = train(spec_for(run_dir, "legacy", train_file=str(run_dir / "legacy.jsonl")), hooks, settings)
    assert r.status == "cancelled" and r.step == 1 and r.model_dir is None
    assert len(hooks.metrics) == 1 and hooks.checkpoints == []
    # continue training the baseline's adapter (model="ft:..."): it starts from the learned loss
    cont = RecordingHooks(cancel_after=1)
    train(spec_for(run_dir, "continued", init_adapter=base_result.model_dir, lora_r=4), cont, settings)
    fresh_first = baseline[2].metrics[0]["train_loss"]
    assert cont.metrics[0]["train_loss"] < fresh_first


def test_truncation_reported_and_bad_files(run_dir, settings):
    data = run_dir / "long.jsonl"
    write_data(data, 10)
    with open(data, "a") as f:
        for n_words in (100, 200):
            f.write(json.dumps({"messages": [{"role": "user", "content": "very " * n_words + "long"},
                                             {"role": "assistant", "content": "ok"}]}) + "\n")
    hooks = RecordingHooks(cancel_after=1)
    train(spec_for(run_dir, "trunc", train_file=str(data), max_seq_len=64), hooks, settings)
    assert ("warn", "2 of 12 training examples were longer than 64 tokens and were truncated.") in hooks.events
    assert any("2 training examples have no trained tokens" in m for _, m in hooks.events)
    setup = next(m for _, m in hooks.events if m.startswith("Setup took "))  # where time outside the loop goes
    assert re.fullmatch(r"Setup took [\d.]+ s: start-up [\d.]+ s, tokenizing [\d.]+ s, loading the model [\d.]+ s\.",
                        setup), setup
    bad = run_dir / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{oops\n')
    with pytest.raises(DataError) as e:
        train(spec_for(run_dir, "bad", train_file=str(bad)), RecordingHooks(), settings)
    assert "training_file:2" in e.value.message and e.value.code == "invalid_json"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}\n')
    with pytest.raises(DataError) as e:
        train(spec_for(run_dir, "bad2", train_file=str(bad)), RecordingHooks(), settings)
    assert "no example" in e.value.message


def test_full_fine_tuning_saves_a_plain_transformers_model(run_dir, settings):
    from transformers import AutoModelForCausalLM

    hooks = RecordingHooks()
    r = train(spec_for(run_dir, "full", method="full", n_epochs=1, batch_size=8, learning_rate_multiplier=1.0),
              hooks, settings)
    assert r.status == "succeeded" and r.total_steps == 2
    assert os.path.exists(os.path.join(r.model_dir, "model.safetensors"))
    assert os.path.exists(os.path.join(hooks.checkpoints[-1][2], "trainer_state", "optimizer.pt"))
    model = AutoModelForCausalLM.from_pretrained(r.model_dir)  # stock attention, no openft needed
    assert model.config._attn_implementation in ("sdpa", "eager")


class PauseInsideStep(RecordingHooks):
    """Asks for a pause between the micro-batches of step `step` (not at a step's end)."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.calls = step, 0

    def should_stop(self):
        done = self.progress[-1][0] if self.progress else 0
        if done == self.step - 1:
            self.calls += 1
            return "pause" if self.calls > 1 else None   # call 1: the end-of-step check of the step before
        return None


def test_a_pause_between_micro_batches_stops_inside_the_step_with_a_checkpoint(run_dir, model_cache):
    """A step of many micro-batches (one example each) is not finished first: the pause saves the
    weights of the last whole step and stops; resuming redoes the interrupted step."""
    from openft.config import Settings

    settings = Settings(model_cache_dir=model_cache)
    hooks = PauseInsideStep(3)
    spec = spec_for(run_dir, "mid-step-pause", packing=False, n_epochs=1)
    r1 = train(spec, hooks, settings)
    assert r1.status == "paused" and r1.step == 2 and [m["step"] for m in hooks.metrics] == [1, 2]
    assert r1.checkpoint_dir.endswith("step-2") and hooks.checkpoints[-1][0] == 2
    again = RecordingHooks()
    r2 = train(spec, again, settings, resume_from=r1.checkpoint_dir)
    assert r2.status == "succeeded" and [m["step"] for m in again.metrics] == [3, 4]
