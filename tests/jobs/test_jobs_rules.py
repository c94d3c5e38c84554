"""openft.train.rules: each trainer rule that the API, the validator and the runner apply, once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from openft.errors import InvalidRequest
from openft.jobs.validate import effective_max_seq_len
from openft.train import rules


def _model_dir(tmp_path, config: dict):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("config, context", [
    ({"max_position_embeddings": 4096}, 4096),
    ({"n_positions": 1024, "model_type": "gpt2"}, 1024),  # GPT-2 names it n_positions
    ({"text_config": {"max_position_embeddings": 8192}}, 8192),  # multimodal configs nest it
    ({}, rules.DEFAULT_CONTEXT),
])
def test_the_validator_truncates_where_the_trainer_does(tmp_path, config, context):
    """Validation (jobs.validate) and training (train.loop) both call rules.truncation_length on
    rules.model_context_length: a GPT-2-style config used to be 1024 to the trainer (transformers
    maps n_positions) and 2048 to the validator (config.json's max_position_embeddings only)."""
    d = _model_dir(tmp_path, config)
    assert rules.model_context_length(d) == context
    sup = {"type": "supervised", "supervised": {"hyperparameters": {"max_seq_len": 100}}}
    assert effective_max_seq_len(d, sup) == min(100, context)
    assert effective_max_seq_len(d, {"type": "supervised"}) == context
    assert rules.truncation_length(context, 10**9) == context and rules.truncation_length(context, "auto") == context


def test_hyperparameters_are_read_from_the_methods_own_section():
    assert rules.method_type(None) == "supervised" and rules.hyperparameters(None) == {}
    method = {"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 9}},
              "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.1}}}
    assert rules.method_type(method) == "dpo" and rules.hyperparameters(method) == {"n_epochs": 2, "beta": 0.1}
    assert [rules.positive_int(v) for v in (3, 0, -1, True, "auto", 2.0, None)] == [3, None, None, None, None,
                                                                                       None, None]


def test_reserved_names_are_neither_options_nor_passed_to_the_trainer():
    from openft.api.schemas import train_options

    assert not set(train_options()) & rules.RESERVED_HYPERPARAMETERS
    assert {"seed", "device", "output_dir", "init_adapter"} <= rules.RESERVED_HYPERPARAMETERS


def test_continuing_allows_lora_on_lora_only(tmp_path):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    rules.check_continuation("ft:x", "base", None, adapter_dir=str(lora))  # fine
    for kw in ({"full_model": True}, {"adapter_dir": str(tmp_path / "gone")}):
        with pytest.raises(InvalidRequest) as e:
            rules.check_continuation("ft:x", "base", None, **kw)
        assert e.value.param == "model" and "not a LoRA adapter" in e.value.message and "base" in e.value.message
    full = {"type": "supervised", "supervised": {"hyperparameters": {"method": "full"}}}
    with pytest.raises(InvalidRequest, match="'full'"):
        rules.check_continuation("ft:x", "base", full, adapter_dir=str(lora))


def test_rules_import_neither_torch_nor_jobs_nor_api():
    code = ("import sys, openft.train.rules; bad = [m for m in sys.modules if m == 'torch' or "
            "m.startswith(('openft.jobs', 'openft.api'))]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
