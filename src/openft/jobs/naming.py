"""Names of fine-tuned models and checkpoints: `ft:<base>:<org>:<suffix>:<id>[:ckpt-step-N]`.

Pure string functions; the `models` and `checkpoints` rows hold the facts (base model, path),
so nothing ever parses these names back apart from display.
"""

from __future__ import annotations

import re

_JOB_PREFIX = "ftjob-"


def short_job_id(job_id: str) -> str:
    """The 8 characters of a job id used in its model names."""
    return job_id.removeprefix(_JOB_PREFIX)[:8]


def _part(text: str) -> str:
    # A name part may not contain ':' (the separator) nor '/' (model ids go in URL paths).
    return re.sub(r"[:/]+", "--", text)


def fine_tuned_model_id(base_model: str, organization: str, suffix: str | None, job_id: str) -> str:
    """`ft:smollm2-135m-instruct:openft:reviews:AbCd1234`; an empty suffix gives `ft:base:org::id`."""
    return f"ft:{_part(base_model)}:{_part(organization)}:{_part(suffix or '')}:{short_job_id(job_id)}"


def checkpoint_model_id(model_id: str, step: int) -> str:
    return f"{model_id}:ckpt-step-{int(step)}"
