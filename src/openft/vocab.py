"""The fine-tuning words every floor shares, each defined once: the method types openft trains,
OpenAI's three hyperparameter names (and each method's), and OpenAI's limits on `metadata`
with the one check that applies them.

The API, the CLI, file validation (`openft.data`), the job runner, the migration planner and
the dashboard's API all import these; nothing here knows HTTP, the database or torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from openft.errors import InvalidRequest

# -- methods -------------------------------------------------------------------------------------

SUPERVISED = "supervised"
DPO = "dpo"
REINFORCEMENT = "reinforcement"
SUPPORTED_METHODS = (SUPERVISED, DPO)
"""The `method.type`s openft trains."""
OPENAI_METHODS = (SUPERVISED, DPO, REINFORCEMENT)
"""The `method.type`s OpenAI's API names: a request may say any of them (the unsupported one is
refused with a message that says what is supported); anything else is not a method."""
DEFAULT_METHOD = SUPERVISED
"""A job created without `method` (OpenAI's legacy top-level `hyperparameters`)."""

# -- hyperparameters -----------------------------------------------------------------------------

HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
"""OpenAI's three hyperparameters, each "auto" or a value, in the order the trainer resolves them
(openft.data.auto); a job object lists them sorted, as OpenAI does."""
METHOD_HYPERPARAMETERS = {SUPERVISED: HYPERPARAMETERS, DPO: HYPERPARAMETERS + ("beta",)}
"""The hyperparameters OpenAI defines for each method (openft's own training options aside)."""

# -- metadata ------------------------------------------------------------------------------------

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def check_metadata(metadata: Mapping[str, str] | None, param: str = "metadata") -> None:
    """OpenAI's limits on a `metadata` object (jobs, evals, eval runs, responses): at most 16 pairs, keys of
    at most 64 characters, values of at most 512. InvalidRequest naming the pair otherwise."""
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"metadata may hold at most {MAX_METADATA_KEYS} key-value pairs, got {len(metadata)}.",
                             param=param, code="invalid_value")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters; "
                                 f"{key[:20]!r}... is longer.", param=f"{param}.{key[:MAX_METADATA_KEY_CHARS]}",
                                 code="invalid_value")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(f"metadata values are at most {MAX_METADATA_VALUE_CHARS} characters; the value "
                                 f"of {key!r} is longer.", param=f"{param}.{key}", code="invalid_value")
