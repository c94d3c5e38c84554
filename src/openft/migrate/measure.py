"""The dry run's numbers: each downloaded file's examples and tokens, each job's time on this machine.

`Estimator.measure(plan, role, file_id, meta, path)` runs the data toolkit's validation
(`openft.data.validate.validate_file`) on a downloaded file with the target base's tokenizer and
keeps its counts; for the training file it adds the time estimate
(`openft.data.estimate`) from this machine's measured pace for that base: earlier jobs in the
local data folder (`openft.store.pace.pace_in_data_dir`), else, with `probe=True`, a short probe
of the real trainer (`openft.train.probe.run_probe`); without either the time is unknown.

Knows the data toolkit, the pace store and the probe; nothing about HTTP or the CLI. The
tokenizer loader is passed in (the CLI's, which knows the model registry and the settings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openft.data.estimate import Pace, human_duration


@dataclass
class FileFacts:
    role: str
    file_id: str
    filename: str
    bytes: int
    n_examples: int | None = None
    tokens: int | None = None
    errors: int = 0
    first_error: str | None = None


@dataclass
class JobFacts:
    files: list[FileFacts] = field(default_factory=list)
    estimated_seconds: float | None = None
    pace_source: str | None = None
    n_epochs: int | None = None
    note: str | None = None

    def time_line(self) -> str:
        if self.estimated_seconds is None:
            return "unknown" + (f" ({self.note})" if self.note else "")
        return f"{human_duration(self.estimated_seconds)} (pace from {self.pace_source}; {self.n_epochs} epoch(s))"


class Estimator:
    """Counts files and estimates jobs for a dry run; one tokenizer and one pace per base model."""

    def __init__(self, settings: Any, load_tokenizer: Callable[[str], tuple[Any, int | None]], *,
                 probe: bool = False):
        self.settings, self.load_tokenizer, self.probe = settings, load_tokenizer, probe
        self.jobs: dict[str, JobFacts] = {}
        self._tokenizers: dict[str, tuple[Any, int | None] | Exception] = {}
        self._paces: dict[str, Pace | None] = {}

    def _tokenizer(self, model: str):
        if model not in self._tokenizers:
            try:
                self._tokenizers[model] = self.load_tokenizer(model)
            except Exception as e:  # noqa: BLE001 - no tokens then, and the plan says why
                self._tokenizers[model] = e
        return self._tokenizers[model]

    def _pace(self, model: str, path: Path, n_examples: int, hp: dict) -> Pace | None:
        if model not in self._paces:
            from openft.store.pace import pace_in_data_dir

            pace = pace_in_data_dir(self.settings, model)
            if pace is None and self.probe:
                from openft.train.probe import run_probe

                pace = run_probe(self.settings, model, path, n_examples, hp)
            self._paces[model] = pace
        return self._paces[model]

    def measure(self, plan, role: str, file_id: str, meta: Any, path: Path) -> None:
        from openft.data.validate import validate_file

        facts = self.jobs.setdefault(plan.source_id, JobFacts())
        ff = FileFacts(role, file_id, meta.filename, meta.bytes)
        facts.files.append(ff)
        tok = self._tokenizer(plan.target_model)
        if isinstance(tok, Exception):
            facts.note = f"no tokenizer for {plan.target_model}: {type(tok).__name__}: {tok}"
            tokenizer, ctx = None, None
        else:
            tokenizer, ctx = tok
        n_epochs = plan.hyperparameters.get("n_epochs")
        n_epochs = n_epochs if isinstance(n_epochs, int) and not isinstance(n_epochs, bool) else None
        pace = None
        if role == "training" and tokenizer is not None:
            pace = self._pace(plan.target_model, path, _count_lines(path), plan.hyperparameters)
        rep = validate_file(path, tokenizer=tokenizer, max_seq_len=ctx, min_examples=1, display_name=file_id,
                            model=plan.target_model, n_epochs=n_epochs, pace=pace)
        ff.n_examples = rep.n_examples
        ff.tokens = rep.stats.get("total_tokens")
        ff.errors = len(rep.errors)
        ff.first_error = str(rep.errors[0]) if rep.errors else None
        est = rep.stats.get("estimate")
        if role == "training" and est:
            facts.estimated_seconds, facts.pace_source = est.get("estimated_seconds"), est.get("pace_source")
            facts.n_epochs = est.get("n_epochs")
            if facts.estimated_seconds is None and facts.note is None:
                facts.note = ("no pace measured on this machine for this model yet; --probe measures one"
                              if not self.probe else "the probe could not measure a pace")


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n
