"""What migrating one source fine-tuning job means: the target base, method, settings and files.

`ModelMap` picks the open-weight base for a source model (`SOURCE=TARGET` pairs from flags, a
JSON or TOML file, `*` patterns; anything unmatched goes to the default base, and says so).
`plan_job(job, model_map)` turns a source job (the `openai` SDK's `FineTuningJob`, or anything
with the same attributes) into a `JobPlan`: the concrete hyperparameters the source resolved
("auto" only where the source never resolved one), the suffix, the seed, the metadata with
`migrated_from` (OpenAI allows 16 keys; one is dropped, and named, to make room), and why the job
cannot be migrated when it cannot.

Pure: no network, no files; knows nothing about the CLI, the API server or training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.errors import InvalidRequest
from openft.models.aliases import is_pattern, match, read_model_table
from openft.vocab import DEFAULT_METHOD, MAX_METADATA_KEYS, METHOD_HYPERPARAMETERS, SUPPORTED_METHODS

MIGRATED_FROM = "migrated_from"      # the metadata key that names the source job on the target


@dataclass(frozen=True)
class ModelMap:
    """Source model -> target base: exact names first, then `*` patterns (in the order given)."""

    pairs: tuple[tuple[str, str], ...] = ()
    default: str = "smollm2-135m-instruct"

    @classmethod
    def build(cls, pairs: list[str] | None, map_file: str | Path | None, default: str) -> ModelMap:
        """From `--base-model SOURCE=TARGET` items (they win) and a JSON/TOML file of source: target."""
        out: list[tuple[str, str]] = []
        for item in pairs or []:
            src, sep, dst = item.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise InvalidRequest(f"--base-model expects SOURCE=TARGET, got {item!r}", param="base_model")
            out.append((src.strip(), dst.strip()))
        if map_file is not None:
            out.extend(read_map_file(map_file))
        return cls(tuple(out), default)

    def target(self, source_model: str) -> tuple[str, str]:
        """(target base, why): the mapping that matched (openft.models.aliases.match), or the default base."""
        names = [source_model]
        if source_model.startswith("ft:") and len(source_model.split(":")) > 1:
            names.append(source_model.split(":")[1])  # a job continued from ft:BASE:...: BASE's mapping
        for exact in (True, False):
            for name in names:
                found = match([(s, d) for s, d in self.pairs if (not is_pattern(s)) == exact], name)
                if found:
                    return found[1], f"mapped {found[0]}={found[1]}"
        return self.default, "default base (no --base-model mapping for it)"


def read_map_file(path: str | Path) -> list[tuple[str, str]]:
    """`{"gpt-4o-mini*": "smollm2-135m-instruct"}` as JSON, or the same as TOML (top level or under
    [models]); the same format as OPENFT_MODEL_ALIASES (openft.models.aliases)."""
    return read_model_table(path, "--map-file", "map_file")


@dataclass
class JobPlan:
    """One source job, as the target job it becomes."""

    source_id: str
    source_model: str
    status: str
    target_model: str
    target_why: str
    method: str
    hyperparameters: dict[str, Any]
    training_file: str | None
    validation_file: str | None
    suffix: str | None
    seed: int | None
    metadata: dict[str, str]
    skip: str | None = None                    # why it is not migrated (an unsupported method...)
    notes: list[str] = field(default_factory=list)   # what was changed or left behind, for the plan

    def method_object(self) -> dict:
        return {"type": self.method, self.method: {"hyperparameters": dict(self.hyperparameters)}}

    def files(self) -> list[tuple[str, str]]:
        """[(role, source file id)] for the files this job needs."""
        return [(role, fid) for role, fid in (("training", self.training_file), ("validation", self.validation_file))
                if fid]


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True)
    return obj


def resolved_hyperparameters(job: Any, method: str) -> tuple[dict[str, Any], list[str]]:
    """The method's hyperparameters with the concrete values the source resolved; the names of
    any others the source set (openft does not take them) for the plan's notes."""
    section = _plain(_get(_get(job, "method"), method)) or {}
    hp = dict(_plain(section.get("hyperparameters")) or {})
    legacy = _plain(_get(job, "hyperparameters")) or {}   # the deprecated top level, resolved too
    out: dict[str, Any] = {}
    for key in METHOD_HYPERPARAMETERS.get(method, ()):
        value = hp.get(key)
        if value in (None, "auto") and legacy.get(key) not in (None, "auto"):
            value = legacy[key]
        if value is not None:
            out[key] = value
    dropped = sorted(k for k, v in hp.items() if k not in out and v is not None)
    return out, dropped


def source_suffix(job: Any) -> str | None:
    """The suffix the user gave: openft's `suffix`, OpenAI's `user_provided_suffix`, else the
    fourth field of `ft:BASE:ORG:SUFFIX:ID`."""
    for name in ("suffix", "user_provided_suffix"):
        value = _get(job, name)
        if isinstance(value, str) and value:
            return value
    model = _get(job, "fine_tuned_model") or ""
    parts = model.split(":")
    if model.startswith("ft:") and len(parts) >= 5 and parts[3]:
        return parts[3]
    return None


def plan_job(job: Any, model_map: ModelMap) -> JobPlan:
    """The target job for a source `job`."""
    method_obj = _get(job, "method")
    method = _get(method_obj, "type") or DEFAULT_METHOD
    target, why = model_map.target(_get(job, "model") or "")
    hp, dropped = resolved_hyperparameters(job, method)
    notes = [f"hyperparameter(s) {', '.join(dropped)} not carried over (openft does not take them)"] if dropped else []
    source_md = {str(k): str(v) for k, v in (_plain(_get(job, "metadata")) or {}).items()}
    metadata = {k: v for k, v in source_md.items() if k != MIGRATED_FROM}
    if source_md.get(MIGRATED_FROM):
        notes.append(f"its own metadata {MIGRATED_FROM}={source_md[MIGRATED_FROM]} is replaced by this job's id")
    while len(metadata) >= MAX_METADATA_KEYS:
        gone = list(metadata)[-1]
        notes.append(f"metadata key {gone!r} dropped to make room for {MIGRATED_FROM} "
                     f"({MAX_METADATA_KEYS} keys at most)")
        del metadata[gone]
    metadata[MIGRATED_FROM] = _get(job, "id")
    if _get(job, "integrations"):
        notes.append("integrations (wandb) are not carried over")
    skip = None
    if method not in SUPPORTED_METHODS:
        skip = f"method {method!r} is not supported by openft (it fine-tunes with {' or '.join(SUPPORTED_METHODS)})"
    elif not _get(job, "training_file"):
        skip = "the source job names no training file"
    return JobPlan(source_id=_get(job, "id"), source_model=_get(job, "model") or "", status=_get(job, "status") or "",
                   target_model=target, target_why=why, method=method, hyperparameters=hp,
                   training_file=_get(job, "training_file"), validation_file=_get(job, "validation_file"),
                   suffix=source_suffix(job), seed=_get(job, "seed"), metadata=metadata, skip=skip, notes=notes)
