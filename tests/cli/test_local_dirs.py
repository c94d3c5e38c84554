"""Local commands write only where they are told (issue 21, 3.4): `openft data validate -m` run
from some folder keeps converted models in the configured data folder (OPENFT_DATA_DIR) or,
with nothing configured, in the user's cache, never in a new ./openft-data in the current
folder; and libraries' progress bars stay out of its output when it is not a terminal.
The real `python -m openft` in a subprocess (stdout and stderr are pipes, not a TTY)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from openft.models.registry import TINY_MODEL
from tests.support.data import write_chat_jsonl

BARS = ("it/s]", "s/it]", "%|")   # what a tqdm bar prints


def _run(cwd, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPENFT_") and k not in ("XDG_CACHE_HOME", "TQDM_DISABLE",
                                                        "HF_HUB_DISABLE_PROGRESS_BARS")} | env
    return subprocess.run([sys.executable, "-m", "openft", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_without_a_data_folder_models_go_to_the_user_cache_not_the_current_folder(tmp_path, tiny_model_dir):
    cwd, cache = tmp_path / "project", tmp_path / "xdg"
    cwd.mkdir()
    (cache / "openft" / "models").mkdir(parents=True)
    (cache / "openft" / "models" / TINY_MODEL).symlink_to(tiny_model_dir)  # built already: no conversion here
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    out = _run(cwd, {"XDG_CACHE_HOME": str(cache)}, "data", "validate", str(data), "-m", TINY_MODEL)
    assert out.returncode == 0, out.stderr
    assert "12 examples" in out.stdout
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_data_dir_is_used_and_no_progress_bar_is_printed(tmp_path):
    cwd, data_dir = tmp_path / "project", tmp_path / "data"
    cwd.mkdir()
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    out = _run(cwd, {"OPENFT_DATA_DIR": str(data_dir), "XDG_CACHE_HOME": str(tmp_path / "xdg")},
               "data", "validate", str(data), "-m", TINY_MODEL)   # builds the tiny model: transformers' bars
    assert out.returncode == 0, out.stderr
    assert list(cwd.iterdir()) == [] and not (tmp_path / "xdg").exists()
    assert (data_dir / "models" / TINY_MODEL / "config.json").exists()
    for bar in BARS:
        assert bar not in out.stdout and bar not in out.stderr, (bar, out.stdout, out.stderr)
