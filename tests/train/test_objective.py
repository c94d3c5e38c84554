"""The objective interface (openft.train.objective): every objective the spec accepts has a class
that implements it, the loop has no objective of its own, and an objective that makes a step's
micro-batches from the live model (as a reinforcement objective's rollouts will) runs in the
unchanged loop."""

import re
from pathlib import Path

import pytest
import torch

from openft.data.encode import Encoded
from openft.train import objective as objective_mod
from openft.train.data import StepBatches, pack
from openft.train.hooks import RecordingHooks
from openft.train.loop import train
from openft.train.objective import OBJECTIVES, Objective
from openft.train.sft import SFT
from openft.train.spec import OBJECTIVES as SPEC_OBJECTIVES
from openft.train.spec import TrainSpec
from tests.support.data import write_chat_jsonl


def test_each_objective_the_spec_accepts_has_a_class_implementing_the_protocol(tiny_tokenizer):
    assert set(OBJECTIVES) == set(SPEC_OBJECTIVES)
    for name, cls in OBJECTIVES.items():
        obj = cls(TrainSpec(objective=name), tiny_tokenizer, torch.device("cpu"), "fp32")
        assert isinstance(obj, Objective), name
        assert isinstance(obj.csv_columns, tuple) and isinstance(obj.pace_suffix, str)


def test_the_loop_names_no_objective():
    """What differs between objectives lives in their classes; the loop only passes one along."""
    source = Path(objective_mod.__file__).with_name("loop.py").read_text()
    for name in OBJECTIVES:
        assert not re.search(rf"\b{name}\b", source, re.IGNORECASE), name


class SelfTaught(SFT):
    """Trains on the model's own greedy continuation of each prompt, generated at each step from
    the model as it is then: a stand-in for rollouts, with the loop left as it is."""

    calls: list = []

    def step_batches(self, model, examples, budget):
        weights = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
        self.calls.append((model.training, weights.clone()))
        model.eval()
        made = []
        with torch.no_grad():
            for e in examples:
                prompt = e.input_ids[:e.mask.index(1)]
                ids = model.generate(input_ids=torch.tensor([prompt], device=self.device), max_new_tokens=3,
                                     min_new_tokens=3, do_sample=False, pad_token_id=0)[0].tolist()
                made.append(Encoded(ids, [0] * len(prompt) + [1] * (len(ids) - len(prompt))))
        model.train()
        self.calls[-1] += (sum(len(e) for e in made),)
        return StepBatches(pack(made, budget), n_target=sum(e.n_trained for e in made),
                           tokens=sum(len(e) for e in made))


def test_an_objective_that_generates_its_batches_runs_in_the_unchanged_loop(tmp_path, settings, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "sft", SelfTaught)
    monkeypatch.setattr(SelfTaught, "calls", [])
    hooks = RecordingHooks()
    spec = TrainSpec(base_model="openft-tiny", train_file=str(write_chat_jsonl(tmp_path / "t.jsonl", 6)),
                     output_dir=str(tmp_path / "run"), n_epochs=1, batch_size=2, learning_rate_multiplier=5.0,
                     precision="fp32")
    result = train(spec, hooks, settings)
    calls = SelfTaught.calls
    assert result.status == "succeeded" and len(calls) == result.total_steps == 3
    assert all(training for training, _, _ in calls)          # handed the model in training mode
    for (_, before, _), (_, after, _) in zip(calls, calls[1:]):
        assert not torch.equal(before, after)                 # ... as the previous step left it
    # 3 generated tokens per example are the step's trained tokens, the generated rows its tokens
    assert result.trained_tokens == sum(n for _, _, n in calls)
    assert [m["step"] for m in hooks.metrics] == [1, 2, 3]
    assert all(m["train_loss"] > 0 and 0 <= m["train_mean_token_accuracy"] <= 1 for m in hooks.metrics)
    # greedy continuations are the model's own argmax: it predicts most of them already
    assert hooks.metrics[0]["train_mean_token_accuracy"] == pytest.approx(1.0)
