"""Classification metrics inside fine-tuning jobs, through the legacy CLI against a live server:
`openft api fine_tunes.create --compute_classification_metrics ...` trains openft-tiny, follows
it, and `fine_tunes.results` prints the classification/* columns; the checkpoint carries them.
Bad combinations are 400s at creation naming the field."""

from __future__ import annotations

import csv
import io
import re

import openai
import pytest
from typer.testing import CliRunner

from openft.cli import app
from tests.support.data import write_chat_jsonl

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("cli_env")


def cli(*args):
    result = runner.invoke(app, list(args), prog_name="openft")
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.mark.slow
def test_legacy_classification_flags_end_to_end(tmp_path, client):
    train = write_chat_jsonl(tmp_path / "t.jsonl", 12)
    valid = write_chat_jsonl(tmp_path / "v.jsonl", 10, seed=1)
    out = cli("api", "fine_tunes.create", "-t", str(train), "-v", str(valid), "-m", "openft-tiny",
              "--n_epochs", "2", "--batch_size", "6", "--compute_classification_metrics",
              "--classification_n_classes", "2", "--classification_positive_class", "positive",
              "--classification_betas", "0.5,2", "--prompt_loss_weight", "0.01")
    assert "successfully completed" in out or "Job succeeded" in out or "Fine-tuned model" in out, out
    job_id = re.search(r"Created fine-tune: (ftjob-\S+)", out).group(1)
    rows = list(csv.DictReader(io.StringIO(cli("api", "fine_tunes.results", "-i", job_id))))
    cols = ["classification/accuracy", "classification/precision", "classification/recall",
            "classification/auroc", "classification/auprc", "classification/f0.5", "classification/f1.0",
            "classification/f2.0"]
    assert all(c in rows[0] for c in cols), list(rows[0])
    ends = [r for r in rows if r["classification/accuracy"]]
    assert [int(r["step"]) for r in ends] == [2, 4]  # each epoch end (2 steps per epoch)
    for r in ends:
        assert 0 <= float(r["classification/accuracy"]) <= 1 and 0 <= float(r["classification/auroc"]) <= 1
    assert all(not r["classification/accuracy"] for r in rows if r not in ends)
    ckpts = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert any("classification/auroc" in (c.metrics.model_extra or {}) or
               "classification/auroc" in c.metrics.model_dump() for c in ckpts)


@pytest.mark.parametrize("hp,param", [
    ({"compute_classification_metrics": True, "classification_n_classes": 3},
     "hyperparameters.classification_n_classes"),
    ({"compute_classification_metrics": True, "classification_positive_class": "maybe"},
     "hyperparameters.classification_positive_class"),
    ({"compute_classification_metrics": True, "classification_n_classes": 3, "classification_positive_class": "x"},
     "hyperparameters.classification_positive_class"),
    ({"classification_n_classes": 2}, "hyperparameters.classification_n_classes"),
])
def test_bad_classification_combinations_are_400(tmp_path, client, hp, param):
    train = client.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl", 12).open("rb"), purpose="fine-tune")
    valid = client.files.create(file=write_chat_jsonl(tmp_path / "v.jsonl", 10, seed=1).open("rb"),
                                purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id, validation_file=valid.id,
                                       hyperparameters=hp)
    assert e.value.body["param"] == param, e.value.body


def test_classification_needs_a_validation_file(tmp_path, client):
    train = client.files.create(file=write_chat_jsonl(tmp_path / "t.jsonl", 12).open("rb"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="openft-tiny", training_file=train.id,
                                       hyperparameters={"compute_classification_metrics": True})
    assert e.value.body["param"] == "validation_file"
