"""The README's main-job demo (examples/quickstart.py) end to end, on the tiny model: it starts
`openft serve`, uploads the shipped example data, fine-tunes while printing the job's events,
then prints the base and the fine-tuned model's answers to the held-back questions side by side.
(scripts/quickstart.sh runs the same script on smollm2-135m-instruct after installing.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_demo_on_the_tiny_model(model_cache):
    env = {**os.environ, "OPENFT_MODEL_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--model", "openft-tiny", "--train-examples", "12",
         "--valid-examples", "4", "--batch-size", "4"], env=env, capture_output=True, text=True, timeout=500)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    for expected in ("Created fine-tuning job ftjob-", "Files validated, moving job to queued state",
                     "Fine-tuning job started", "New fine-tuned model created", "The job has successfully completed",
                     "Job succeeded", "Fine-tuned: ft:openft-tiny:", "base model says", "fine-tuned says",
                     "Accuracy on "):
        assert expected in out, (expected, out[-3000:])
