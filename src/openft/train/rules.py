"""The trainer's rules that the API, file validation and the job runner all apply, each decided once.

- `method_type` / `hyperparameters`: reading a job's `method` dict
  (`{"type": "supervised", "supervised": {"hyperparameters": {...}}}`).
- `positive_int`: a hyperparameter that is a usable count (not "auto", not a bool, > 0).
- `RESERVED_HYPERPARAMETERS`: TrainSpec fields the server sets itself, never the caller.
- `context_length` / `truncation_length`: how long an example may be before the trainer cuts it.
- `check_continuation`: what continuing from an `ft:` model (or checkpoint) allows.

Pure: no torch, nothing from jobs or api; reads at most a model folder's config.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openft.errors import InvalidRequest
from openft.vocab import DEFAULT_METHOD, DPO, SUPERVISED

OBJECTIVES = {SUPERVISED: "sft", DPO: "dpo"}  # method.type -> TrainSpec.objective
DEFAULT_CONTEXT = 2048  # tokens, when a model's config names no context length
# config.json keys that name the context length, in the order transformers' configs use them
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")

# TrainSpec fields that come from the job row and the server, not from `hyperparameters`.
RESERVED_HYPERPARAMETERS = frozenset({"base_model", "train_file", "valid_file", "output_dir", "init_adapter",
                                      "seed", "device", "objective"})


# -- reading `method` ----------------------------------------------------------------------------

def method_type(method: Mapping | None) -> str:
    return (method or {}).get("type") or DEFAULT_METHOD


def hyperparameters(method: Mapping | None) -> dict:
    """The hyperparameters of the method's own section ({} when none)."""
    method = method or {}
    return dict(((method.get(method_type(method)) or {}).get("hyperparameters")) or {})


def positive_int(value: Any) -> int | None:
    """`value` when it is a positive int (not a bool), else None ("auto", absent, nonsense)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# -- context length ------------------------------------------------------------------------------

def context_length(config: Mapping | None) -> int:
    """A model's context in tokens from its config.json content (or its text_config's)."""
    for cfg in (config or {}, (config or {}).get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if positive_int(cfg.get(key)):
                return cfg[key]
    return DEFAULT_CONTEXT


def model_context_length(model_dir: str | Path) -> int:
    """context_length of the config.json in `model_dir` (DEFAULT_CONTEXT when unreadable)."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    return context_length(cfg if isinstance(cfg, dict) else {})


def truncation_length(context: int, max_seq_len: Any) -> int:
    """The length examples are truncated to: the requested max_seq_len, never past the context."""
    return min(positive_int(max_seq_len) or context, context)


# -- continuing from a fine-tuned model ----------------------------------------------------------

def check_continuation(model_id: str, base_model: str, method: Mapping | None, *, what: str = "model",
                       full_model: bool = False, adapter_dir: str | None = None) -> None:
    """Continuing `model_id` trains its LoRA adapter further; nothing else is supported yet.

    Refused (InvalidRequest, param "model", code model_not_available): a full fine-tune's weights
    (`full_model`, or an `adapter_dir` that holds no adapter_config.json), and full fine-tuning
    (hyperparameters.method 'full') on top of an adapter."""
    not_adapter = full_model or (adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").exists())
    if not_adapter:
        raise InvalidRequest(f"Continuing from {model_id} is not supported yet: that {what}'s weights are not a LoRA "
                             f"adapter (it is a full fine-tune, method 'full', or its weights were deleted), and "
                             f"openft can only continue LoRA fine-tunes. Fine-tune its base model {base_model} "
                             "instead.", param="model", code="model_not_available")
    if hyperparameters(method).get("method") == "full":
        raise InvalidRequest(f"Full fine-tuning (hyperparameters.method 'full') cannot continue from the LoRA "
                             f"fine-tuned {what} {model_id}; use method 'lora', or fine-tune the base model "
                             f"{base_model} with method 'full'.", param="model", code="model_not_available")
