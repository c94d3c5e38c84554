"""DPO in the training loop on the tiny model: the preferred answers' log-probability rises
relative to the non-preferred ones on held-out pairs (measured against the starting model),
resume reproduces the uninterrupted curve, metrics and the results CSV. The pairs prefer a polite
sentence over a curt reply to arithmetic questions (a preference a 2-layer random model can learn;
a sentiment label it cannot)."""

import csv

import pytest
import torch

from openft.train.hooks import RecordingHooks
from openft.train.loop import train
from openft.train.spec import TrainSpec
from tests.support.data import write_style_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory, model_cache):
    from openft.config import Settings

    tmp = tmp_path_factory.mktemp("dpo")
    write_style_pairs(tmp / "train.jsonl", 32)
    write_style_pairs(tmp / "valid.jsonl", 8, seed=1)
    write_style_pairs(tmp / "held_out.jsonl", 24, seed=2)  # questions the training never saw
    return tmp, Settings(data_dir=tmp / "data", model_cache_dir=model_cache)


def spec_for(tmp, name, **kw):
    base = dict(base_model="openft-tiny", train_file=str(tmp / "train.jsonl"), output_dir=str(tmp / name),
                objective="dpo", n_epochs=3, batch_size=8, learning_rate_multiplier=5.0, seed=3, precision="fp32",
                valid_file=str(tmp / "valid.jsonl"), checkpoint_every_steps=2, beta=0.5)
    base.update(kw)
    return TrainSpec(**base)


@pytest.fixture(scope="module")
def baseline(setup):
    tmp, settings = setup
    hooks = RecordingHooks()
    result = train(spec_for(tmp, "baseline"), hooks, settings)
    return hooks, result


def held_out_margins(tmp, settings, adapter_dir) -> list[float]:
    """logp(preferred) - logp(non-preferred) of each held-out pair (starting model: adapter_dir None)."""
    from transformers import AutoTokenizer

    from openft.models import materialize
    from openft.train import dpo
    from openft.train.model import build_model

    base = materialize(settings, "openft-tiny")
    pairs = dpo.load_pairs(AutoTokenizer.from_pretrained(base), tmp / "held_out.jsonl", None).examples
    model = build_model(base, method="lora", precision="fp32", device=torch.device("cpu"), adapter_dir=adapter_dir)
    if adapter_dir is None:
        with model.disable_adapter():
            lp = dpo.reference_logps(model, pairs, 4096, "fp32", torch.device("cpu"))
    else:
        lp = dpo.reference_logps(model, pairs, 4096, "fp32", torch.device("cpu"))
    return [c - r for c, r in lp]


def test_preferred_answers_rise_on_held_out_pairs(setup, baseline):
    tmp, settings = setup
    _, result = baseline
    before = held_out_margins(tmp, settings, None)
    after = held_out_margins(tmp, settings, result.model_dir)
    rise = [a - b for a, b in zip(after, before)]  # DPO's implicit reward margin / beta, per pair
    assert sum(rise) / len(rise) > 5.0, rise  # nats: measured about +11.7 with this seed
    assert sum(r > 0 for r in rise) / len(rise) >= 0.9, rise  # held-out reward accuracy


def test_metrics_checkpoints_and_csv(baseline):
    hooks, result = baseline
    assert result.status == "succeeded" and result.total_steps == 12
    assert result.hyperparameters == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 5.0, "beta": 0.5}
    first, last = hooks.metrics[0], hooks.metrics[-1]
    assert first["train_loss"] == pytest.approx(0.693147, abs=1e-5)  # policy == reference before step 1
    assert last["train_loss"] < first["train_loss"] and last["train_reward_accuracy"] > 0.5
    for m in hooks.metrics:
        assert m["train_reward_margin"] == pytest.approx(m["train_chosen_reward"] - m["train_rejected_reward"], abs=1e-6)
    assert any("full_valid_reward_accuracy" in m for m in hooks.metrics)
    assert all("train_reward_accuracy" in c[3] for c in hooks.checkpoints)
    assert any("reference model" in msg for _, msg in hooks.events)
    rows = list(csv.DictReader(open(result.results_csv)))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["train_reward_accuracy"]) == pytest.approx(last["train_reward_accuracy"], abs=1e-6)
    assert rows[-1]["valid_reward_margin"] != ""


def test_resume_reproduces_the_uninterrupted_curve(setup, baseline):
    tmp, settings = setup
    base_hooks, _ = baseline
    first = RecordingHooks(pause_after=5)
    paused = train(spec_for(tmp, "resumed"), first, settings)
    assert paused.status == "paused" and paused.step == 5
    second = RecordingHooks()
    done = train(spec_for(tmp, "resumed"), second, settings, resume_from=paused.checkpoint_dir)
    assert done.status == "succeeded"
    # the cached reference (the starting model's) is used, not the checkpoint's log-probabilities
    assert not any("reference model" in msg for _, msg in second.events)
    curve = {**first.losses(), **second.losses()}
    expected = base_hooks.losses()
    assert sorted(curve) == sorted(expected)
    for step, loss in expected.items():
        assert curve[step] == pytest.approx(loss, abs=1e-5), step
    acc = {m["step"]: m["train_reward_accuracy"] for m in first.metrics + second.metrics}
    assert acc == {m["step"]: m["train_reward_accuracy"] for m in base_hooks.metrics}


def test_cancel_stops_a_dpo_run(setup):
    tmp, settings = setup
    hooks = RecordingHooks(cancel_after=2)
    result = train(spec_for(tmp, "cancelled", valid_file=None), hooks, settings)
    assert result.status == "cancelled" and result.step == 2 and result.model_dir is None
