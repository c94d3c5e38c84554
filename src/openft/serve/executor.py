"""Running the model: the built-in engine's device, dtype, CPU threads and one decode step.

`Executor` decides where and how models run (`device` auto -> cuda when present; `dtype` auto ->
bfloat16 on CUDA or a CPU with bf16 units, else float32), builds runners on that device
(`build`), keeps the CPU's intra-op threads at the cores other processes leave idle
(`tune_threads`: openft.cpu_threads, the policy the trainer uses too, unless `serve_threads`
fixes them), and runs one step of a runner (`execute`):
the batched forward, then every row's next token (the grammar's mask on constrained rows, the
sequence's own random stream, the logprobs rows asked for), with one copy to the host.

Knows nothing about queues, stop strings, streaming or HTTP; what a token means is the output
processor's business.
"""

from __future__ import annotations

import torch

from openft.config import Settings
from openft.cpu_threads import ThreadPolicy
from openft.errors import InvalidRequest
from openft.serve.constrain import Guide
from openft.serve.general import build_runner
from openft.serve.model_runner import ModelRunner
from openft.serve.sampling import Picked, sample_batch
from openft.serve.sequence import Sequence
from openft.serve.text import TokenBytes

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Executor:
    def __init__(self, settings: Settings, *, dtype: str | None = None, device: str | None = None):
        self.settings = settings
        dev = device or settings.device
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
        name = dtype or settings.serve_dtype
        if name == "auto":  # bf16 halves the weight traffic of memory-bound decoding (see benchmarks/)
            name = "bfloat16" if self.device == "cuda" or _cpu_has_bf16() else "float32"
        if name not in DTYPES:
            raise InvalidRequest(f"serve dtype must be one of {sorted(DTYPES)} or 'auto', not {name!r}.", param="dtype")
        self.dtype = DTYPES[name]
        # 0: adapt to the cores other processes leave idle (on CPU; a GPU's host threads are left alone)
        self.threads = ThreadPolicy(settings.serve_threads or ("auto" if self.device == "cpu" else "default"))

    def build(self, path: str, name: str) -> ModelRunner:
        """A runner for the model in `path` on this device and dtype, with its token-bytes table."""
        runner = build_runner(path, device=self.device, dtype=self.dtype, name=name,
                              cuda_graphs=self.settings.serve_cuda_graphs)
        runner.token_bytes = TokenBytes(runner.tokenizer)
        return runner

    def tune_threads(self) -> None:
        """Between decode steps: every few seconds, as many intra-op threads as there are cores
        other processes leave idle (openft.cpu_threads; measured 6x slower at load 6 on 2 cores
        with every core's thread)."""
        self.threads.retune()

    def execute(self, runner: ModelRunner, seqs: list[Sequence], guide: Guide | None) -> tuple[Picked, dict]:
        """One step of `runner` over `seqs` (its sequences, in slot order): (each row's next token
        and the logprobs asked for, {row: logits at every prompt position} for echo + logprobs).
        `guide`: the runner's grammar side, for the rows with a matcher."""
        logits, prompt_logits = runner.forward()
        return self._pick(seqs, logits, guide), prompt_logits

    def is_oom(self, e: BaseException) -> bool:
        return isinstance(e, _OOM) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())

    def _pick(self, seqs: list[Sequence], logits: torch.Tensor, guide: Guide | None) -> Picked:
        """Every row's next token, chosen on the logits' device in one batch; the ids (and the
        logprobs of rows that report them) come to the host in one copy."""
        temps, top_ps, uniforms, lp_rows = [], [], [], {}
        for i, s in enumerate(seqs):
            p = s.req.params
            sampled = p.temperature > 0 and (s.started or s.req.max_new > 0)
            temps.append(p.temperature if sampled else 0.0)
            top_ps.append(p.top_p)
            uniforms.append(s.gen.random() if sampled else None)  # the sequence's own stream: seeds repeat
            if p.logprobs:
                lp_rows[i] = p.top_logprobs
        lp = Picked.lp_of(logits, lp_rows)  # reported logprobs are the model's, before the grammar's mask
        guided = [(s.guide, i) for i, s in enumerate(seqs) if s.guide is not None]
        if guided:
            idx = torch.tensor([i for _, i in guided], device=logits.device)
            rows = logits.index_select(0, idx).cpu()
            guide.mask(rows, [(m, k) for k, (m, _) in enumerate(guided)])
            logits = logits.index_copy(0, idx, rows.to(logits.device))
        return Picked(sample_batch(logits, temps, top_ps, uniforms), lp, lp_rows)


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
