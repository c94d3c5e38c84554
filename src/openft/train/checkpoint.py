"""Checkpoints: a standard PEFT adapter folder (or safetensors model for `full`) plus
`trainer_state/` (optimizer, scheduler, RNG, step and data position), written atomically
(temporary folder, then rename), and pruned to the last `keep` ones. Also the results CSV.
A process killed mid-write leaves only a temporary folder (`checkpoints/.step-N.tmp`,
`.model.tmp`), never a half-written checkpoint; `remove_partial` deletes those leftovers.

`transformers` + `peft` load a checkpoint folder without openft. Knows nothing about jobs.
torch is imported by the functions that need it, so the worker can clean folders without it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from pathlib import Path

from openft.faults import fault_point
from openft.train.metrics import CSV_FIELDS, CSV_SOURCES


def checkpoint_dirs(output_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("step-") and d.name[5:].isdigit():
            out.append((int(d.name[5:]), d))
    return sorted(out)


FINAL_DIR, FINAL_TMP = "model", ".model.tmp"  # the final model and its folder while being written


def _step_tmp(step: int) -> str:
    return f".step-{step}.tmp"


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete the temporary folders a killed writer left (`checkpoints/.step-N.tmp`, `.model.tmp`);
    finished checkpoints and the final model are never touched. Returns what was deleted.
    Only for a job no process is writing to (at its (re)start, or a job that is not running)."""
    out = Path(output_dir)
    root = out / "checkpoints"
    found = [p for p in root.glob(".step-*.tmp") if p.name[6:-4].isdigit()] if root.is_dir() else []
    if (out / FINAL_TMP).exists():
        found.append(out / FINAL_TMP)
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return found


def write_final_model(output_dir: str | Path, model, tokenizer) -> Path:
    """<output_dir>/model, written to .model.tmp first and renamed."""
    out = Path(output_dir)
    final, tmp = out / FINAL_DIR, out / FINAL_TMP
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    fault_point("final")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def save_model(model, tokenizer, dest: Path) -> None:
    """PEFT adapter (adapter_config.json + adapter_model.safetensors) or full safetensors model."""
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))


def save_checkpoint(output_dir: str | Path, step: int, model, tokenizer, optimizer, scheduler, state: dict) -> Path:
    import torch

    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    dest, tmp = root / f"step-{step}", root / _step_tmp(step)
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    ts = tmp / "trainer_state"
    ts.mkdir()
    torch.save(optimizer.state_dict(), ts / "optimizer.pt")
    torch.save(scheduler.state_dict(), ts / "scheduler.pt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, ts / "rng.pt")
    (ts / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    fault_point("checkpoint", step)
    shutil.rmtree(dest, ignore_errors=True)  # a stale one from a run that crashed after it
    os.replace(tmp, dest)
    return dest


def load_trainer_state(checkpoint: str | Path) -> dict:
    f = Path(checkpoint) / "trainer_state" / "state.json"
    if not f.exists():
        from openft.errors import InvalidRequest

        raise InvalidRequest(f"{checkpoint} is not a training checkpoint (no trainer_state/state.json).",
                             param="resume_from")
    return json.loads(f.read_text())


def restore_optimizer(checkpoint: str | Path, optimizer, scheduler) -> None:
    import torch

    ts = Path(checkpoint) / "trainer_state"
    optimizer.load_state_dict(torch.load(ts / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ts / "scheduler.pt", weights_only=True))
    rng = torch.load(ts / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def prune(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; return the deleted folders."""
    dirs = checkpoint_dirs(output_dir)
    gone = [d for _, d in dirs[:-keep]] if keep > 0 else []
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


class ResultsCSV:
    """results.csv (openft.train.metrics.CSV_FIELDS; then `extra_fields`, the objective's: a DPO
    run's train_/valid_ reward columns (metrics.DPO_CSV_FIELDS), or the classification/* columns).

    On resume, rows after the resumed step (written before a crash) are dropped first."""

    def __init__(self, path: str | Path, keep_until_step: int = 0, extra_fields: tuple[str, ...] = ()):
        self.path = Path(path)
        self.fields = CSV_FIELDS + tuple(extra_fields)
        rows = []
        if keep_until_step and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= keep_until_step]
        self._fh = open(self.path, "w", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=self.fields, extrasaction="ignore")
        self._w.writeheader()
        self._w.writerows(rows)
        self._fh.flush()

    def write(self, m: dict) -> None:
        def fmt(v):
            return "" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)

        self._w.writerow({**{k: fmt(m.get(CSV_SOURCES.get(k, k))) for k in self.fields}, "step": m["step"]})
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
