"""The frozen training spec: everything one fine-tuning run needs to know, with defaults.

Built by the job runner from an API job (or by tests and benchmarks directly). `validate()`
reports every bad field at once. The spec knows nothing about jobs, HTTP or the database;
"auto" values stay "auto" here and are resolved from the data by `openft.train.auto`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Literal, Union

from openft.errors import InvalidRequest

Auto = Literal["auto"]
METHODS = ("lora", "full", "qlora")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainSpec:
    base_model: str = "smollm2-135m-instruct"
    """Base model id (openft.models registry: smollm2-135m-instruct, openft-tiny, local, hub)."""
    train_file: str = ""
    """Path of the training JSONL (chat `messages` or legacy `prompt`/`completion` lines)."""
    output_dir: str = ""
    """Run folder: checkpoints/step-<N>/, model/, results.csv, spec.json."""
    valid_file: str | None = None
    """Optional validation JSONL, same formats as train_file."""
    method: str = "lora"
    """lora (default), full (all weights), qlora (4-bit base; needs CUDA and bitsandbytes)."""
    n_epochs: Union[int, Auto] = "auto"
    """Passes over the training data; "auto" follows OpenAI's rule (see openft.train.auto)."""
    batch_size: Union[int, Auto] = "auto"
    """Examples per optimizer step (micro-batches are packed by tokens underneath)."""
    learning_rate_multiplier: Union[float, Auto] = "auto"
    """Multiplier of the method's base learning rate (openft.train.auto.BASE_LEARNING_RATE)."""
    seed: int = 42
    """Seed for data order, adapter init and dropout: same seed, same data, same losses."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input, 0 <= p < 1."""
    target_modules: tuple[str, ...] = ("all-linear",)
    """Modules that get LoRA adapters; ("all-linear",) means every linear projection but lm_head."""
    max_seq_len: int | None = None
    """Longest example in tokens (longer ones are truncated from the end); None: the model's context."""
    warmup_ratio: float = 0.0
    """Fraction of total steps spent warming the learning rate up linearly from 0."""
    lr_schedule: str = "linear"
    """Learning rate after warm-up: linear (decay to 0), cosine (to 0) or constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    init_adapter: str | None = None
    """A PEFT adapter folder to continue training (model="ft:..." jobs); its LoRA config wins."""
    checkpoint_every_steps: int | None = None
    """Also checkpoint every N steps (checkpoints are always written at each epoch end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk; older ones are removed (on_checkpoint_removed)."""
    eval_every_steps: int | None = None
    """Validation loss on a small batch every N steps; None: about 10 times per run."""
    device: str = "auto"
    """auto (cuda when present, else cpu), cpu or cuda."""
    precision: str = "auto"
    """auto (bf16 where the hardware runs it fast, else fp32), bf16 or fp32."""
    pack_tokens: int | None = None
    """Token budget of one packed micro-batch row; None: 4096 (at least the longest example)."""
    packing: bool = True
    """Pack examples padding-free; False runs one example per micro-batch (for comparisons)."""
    num_threads: int | None = None
    """CPU threads for torch (torch.set_num_threads); None: torch's default (physical cores)."""

    def validate(self) -> "TrainSpec":
        """Raise InvalidRequest listing every bad field (param = the first); return self."""
        bad: list[tuple[str, str]] = []

        def check(name: str, ok: bool, why: str) -> None:
            if not ok:
                bad.append((name, why))

        def int_or_auto(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if v == "auto":
                return
            check(name, isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                  f"must be 'auto' or an integer in [{lo}, {hi}], got {v!r}")

        check("base_model", isinstance(self.base_model, str) and bool(self.base_model), "must be a model id")
        check("train_file", isinstance(self.train_file, str) and bool(self.train_file), "must be a file path")
        check("output_dir", isinstance(self.output_dir, str) and bool(self.output_dir), "must be a folder path")
        check("method", self.method in METHODS, f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        int_or_auto("n_epochs", 1, 50)
        int_or_auto("batch_size", 1, 256)
        lrm = self.learning_rate_multiplier
        if lrm != "auto":
            check("learning_rate_multiplier",
                  isinstance(lrm, (int, float)) and not isinstance(lrm, bool) and 0 < lrm <= 10,
                  f"must be 'auto' or a number in (0, 10], got {lrm!r}")
        check("seed", isinstance(self.seed, int) and 0 <= self.seed < 2**31, f"must be an integer in [0, 2**31), got {self.seed!r}")
        check("lora_r", isinstance(self.lora_r, int) and 1 <= self.lora_r <= 1024, f"must be an integer in [1, 1024], got {self.lora_r!r}")
        check("lora_alpha", isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0, f"must be > 0, got {self.lora_alpha!r}")
        check("lora_dropout", isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1,
              f"must be in [0, 1), got {self.lora_dropout!r}")
        check("target_modules", isinstance(self.target_modules, (tuple, list)) and len(self.target_modules) > 0
              and all(isinstance(m, str) and m for m in self.target_modules), "must be a non-empty list of module names")
        check("max_seq_len", self.max_seq_len is None or (isinstance(self.max_seq_len, int) and self.max_seq_len >= 8),
              f"must be None or an integer >= 8, got {self.max_seq_len!r}")
        check("warmup_ratio", isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1,
              f"must be in [0, 1), got {self.warmup_ratio!r}")
        check("lr_schedule", self.lr_schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        check("weight_decay", isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "must be >= 0")
        check("max_grad_norm", isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm >= 0, "must be >= 0")
        check("checkpoint_every_steps", self.checkpoint_every_steps is None
              or (isinstance(self.checkpoint_every_steps, int) and self.checkpoint_every_steps >= 1), "must be None or >= 1")
        check("keep_checkpoints", isinstance(self.keep_checkpoints, int) and self.keep_checkpoints >= 1, "must be >= 1")
        check("eval_every_steps", self.eval_every_steps is None
              or (isinstance(self.eval_every_steps, int) and self.eval_every_steps >= 1), "must be None or >= 1")
        check("device", self.device in DEVICES, f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        check("precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check("pack_tokens", self.pack_tokens is None or (isinstance(self.pack_tokens, int) and self.pack_tokens >= 16),
              "must be None or an integer >= 16")
        check("num_threads", self.num_threads is None or (isinstance(self.num_threads, int) and self.num_threads >= 1),
              "must be None or an integer >= 1")
        # combinations
        if self.method == "full" and self.init_adapter:
            bad.append(("init_adapter", "cannot continue a LoRA adapter with method 'full'"))
        if self.method == "qlora":
            if self.device == "cpu":
                bad.append(("method", "qlora needs a CUDA GPU; use 'lora' on CPU"))
            elif importlib.util.find_spec("bitsandbytes") is None:
                bad.append(("method", "qlora needs the bitsandbytes package"))
        if bad:
            msg = "; ".join(f"{name}: {why}" for name, why in bad)
            raise InvalidRequest(f"Invalid training spec: {msg}", param=bad[0][0])
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidRequest(f"Unknown training spec fields: {', '.join(unknown)}", param=unknown[0])
        d = dict(d)
        if "target_modules" in d:
            d["target_modules"] = tuple(d["target_modules"])
        return cls(**d)


def field_docs() -> dict[str, str]:
    """Field name -> its one-line doc (parsed from this file's source; for CLI help and docs)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(TrainSpec)).body[0].body
    return {a.target.id: b.value.value for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}
