"""TrainSpec validation and the "auto" hyperparameter rules."""

import dataclasses

import pytest

from openft.data.auto import BASE_LEARNING_RATE, auto_batch_size, auto_n_epochs, learning_rate, resolve_hyperparameters
from openft.errors import InvalidRequest
from openft.train.spec import TrainSpec, field_docs


def test_defaults_are_valid_and_documented():
    spec = TrainSpec(train_file="t.jsonl", output_dir="out")
    assert spec.validate() is spec
    assert (spec.method, spec.n_epochs, spec.batch_size, spec.learning_rate_multiplier) == ("lora", "auto", "auto", "auto")
    docs = field_docs()
    for f in dataclasses.fields(TrainSpec):
        assert f.default is not dataclasses.MISSING, f.name
        assert docs.get(f.name), f"{f.name} has no one-line doc"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1


def test_every_bad_field_is_reported_at_once():
    spec = TrainSpec(train_file="t.jsonl", output_dir="out", n_epochs=0, batch_size="big",
                     learning_rate_multiplier=-1.0, lora_r=0, lora_dropout=1.5, lr_schedule="step",
                     method="dpo", keep_checkpoints=0)
    with pytest.raises(InvalidRequest) as e:
        spec.validate()
    msg = e.value.message
    assert e.value.param == "method"
    for name in ("method", "n_epochs", "batch_size", "learning_rate_multiplier", "lora_r", "lora_dropout",
                 "lr_schedule", "keep_checkpoints"):
        assert f"{name}:" in msg, name
    assert "seed" not in msg


def test_bad_combinations():
    with pytest.raises(InvalidRequest) as e:
        TrainSpec(train_file="t", output_dir="o", method="full", init_adapter="/a").validate()
    assert e.value.param == "init_adapter"
    with pytest.raises(InvalidRequest) as e:
        TrainSpec(train_file="t", output_dir="o", method="qlora", device="cpu").validate()
    assert e.value.param == "method" and "CUDA" in e.value.message
    with pytest.raises(InvalidRequest) as e:
        TrainSpec(output_dir="o").validate()
    assert e.value.param == "train_file"


def test_dict_round_trip_and_unknown_fields():
    spec = TrainSpec(train_file="t", output_dir="o", target_modules=("q_proj", "v_proj"), n_epochs=2)
    assert TrainSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(InvalidRequest) as e:
        TrainSpec.from_dict({"train_file": "t", "epochs": 3})
    assert e.value.param == "epochs"


@pytest.mark.parametrize("n,epochs", [(1, 25), (3, 25), (10, 10), (20, 5), (33, 4), (34, 3), (100, 3),
                                      (8333, 3), (8334, 2), (12500, 2), (12501, 1), (30000, 1), (10**6, 1)])
def test_auto_epochs_cookbook_rule(n, epochs):
    assert auto_n_epochs(n) == epochs
    assert 1 <= epochs <= 25


@pytest.mark.parametrize("n,bs", [(1, 1), (10, 1), (500, 1), (501, 2), (2400, 5), (10_000, 20), (10**6, 256)])
def test_auto_batch_size(n, bs):
    assert auto_batch_size(n) == bs


def test_resolve_keeps_given_values_and_multiplier_grows_with_batch():
    hp = resolve_hyperparameters(1000, n_epochs=2, batch_size=8, learning_rate_multiplier=0.5)
    assert hp == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}
    small, mid, big = (resolve_hyperparameters(n)["learning_rate_multiplier"] for n in (100, 2000, 20000))
    assert small < mid < big
    assert resolve_hyperparameters(5, batch_size=64)["batch_size"] == 5  # never more than the data
    assert learning_rate("lora", 0.1) == pytest.approx(BASE_LEARNING_RATE["lora"] * 0.1)
