"""The frozen training spec: everything one fine-tuning run needs to know, with defaults.

Built by the job runner from an API job (or by tests and benchmarks directly). `validate()`
reports every bad field at once. The spec knows nothing about jobs, HTTP or the database;
"auto" values stay "auto" here and are resolved from the data by `openft.data.auto`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from typing import Literal, Union

from openft.cpu_threads import logical_cores
from openft.errors import InvalidRequest
from openft.train.rules import OBJECTIVES as METHOD_OBJECTIVES

Auto = Literal["auto"]
METHODS = ("lora", "full", "qlora")
OBJECTIVES = tuple(dict.fromkeys(METHOD_OBJECTIVES.values()))  # "sft", "dpo": one per method type
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
LORA_SUMS = ("auto", "fp32", "bf16", "fp32_cast")
_MODULE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _show(v) -> str:
    """A user's value in a message, short (a 10 MB string is not echoed back)."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


@dataclass(frozen=True)
class TrainLimits:
    """Upper bounds on a spec's resource-hungry fields: what a server lets one job ask for.

    The defaults are the bounds `openft serve` applies unless its operator sets OPENFT_LIMIT_*
    (TrainLimits.from_settings); `unbounded()` checks types and lower bounds only."""

    n_epochs: int = 50
    batch_size: int = 256
    lora_r: int = 256
    lora_alpha: float = 4096.0
    max_seq_len: int = 32768
    pack_tokens: int = 131072
    num_threads: int = 0              # 0: this machine's cores
    checkpoint_every_steps: int = 1_000_000
    keep_checkpoints: int = 20
    eval_every_steps: int = 1_000_000
    weight_decay: float = 10.0
    max_grad_norm: float = 1e6

    def __post_init__(self):
        if self.num_threads <= 0:
            object.__setattr__(self, "num_threads", logical_cores())

    @classmethod
    def from_settings(cls, settings) -> TrainLimits:
        return cls(**{f.name: getattr(settings, f"limit_{f.name}") for f in dataclasses.fields(cls)})

    @classmethod
    def unbounded(cls) -> TrainLimits:
        big = sys.maxsize
        return cls(**{f.name: (big if f.type in ("int", int) else math.inf) for f in dataclasses.fields(cls)})


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
    """Passes over the training data; "auto" follows OpenAI's rule (see openft.data.auto)."""
    batch_size: Union[int, Auto] = "auto"
    """Examples per optimizer step (micro-batches are packed by tokens underneath)."""
    learning_rate_multiplier: Union[float, Auto] = "auto"
    """Multiplier of the method's base learning rate (openft.data.auto.BASE_LEARNING_RATE)."""
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
    lora_sum: str = "auto"
    """bf16 LoRA: the update is added in fp32 and handed on (fp32), rounded back (fp32_cast), or bf16 (PEFT's)."""
    activation_checkpointing: Union[bool, Auto] = "auto"
    """Recompute activations in backward; "auto": on when the estimated peak does not fit the device (and for qlora)."""
    compile: Union[bool, Auto] = "auto"
    """torch.compile the decoder layers; "auto": on for CUDA, off on CPU (see openft.train.model)."""
    num_threads: int | None = None
    """CPU threads for torch (torch.set_num_threads); None: OPENFT_TRAIN_THREADS (auto: idle cores, see openft.cpu_threads)."""
    objective: str = "sft"
    """sft (next-token loss on the answers) or dpo (preference pairs; the job's method.type "dpo")."""
    beta: Union[float, Auto] = "auto"
    """DPO only: the reference policy's weight (TRL's beta); "auto" is 0.1."""
    compute_classification_metrics: bool = False
    """Each epoch end: classification metrics of the final assistant message on the whole validation set."""
    classification_n_classes: int | None = None
    """How many labels the validation set has (checked against it); None: the labels found there."""
    classification_positive_class: str | None = None
    """Binary tasks: the positive label (precision, recall, F-beta, AUROC, AUPRC); None: the second sorted."""
    classification_betas: tuple[float, ...] | None = None
    """F-beta scores to report besides F1 (classification/f<beta> columns)."""

    def validate(self, limits: TrainLimits | None = None) -> TrainSpec:
        """Raise InvalidRequest listing every bad field (param = the first); return self.

        Types, lower bounds and finiteness are always checked; `limits` (the operator's upper
        bounds, see TrainLimits.from_settings) are checked when given."""
        bad: list[tuple[str, str]] = []
        top = limits or TrainLimits.unbounded()

        def check(name: str, ok: bool, why: str) -> None:
            if not ok:
                bad.append((name, why))

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def int_in(name: str, lo: int, *, auto: bool = False, none: bool = False) -> None:
            v, hi = getattr(self, name), getattr(top, name)
            if (auto and v == "auto") or (none and v is None):
                return
            also = " or ".join(w for w, ok in (("'auto'", auto), ("null", none)) if ok)
            rng = f"in [{lo}, {hi}]" if hi < sys.maxsize else f">= {lo}"
            check(name, is_int(v) and lo <= v <= hi,
                  f"must be {also + ' or ' if also else ''}an integer {rng}, got {_show(v)}")

        def upto(x: float) -> str:
            return "" if math.isinf(x) else f" and <= {x:g}"

        check("base_model", isinstance(self.base_model, str) and bool(self.base_model), "must be a model id")
        check("train_file", isinstance(self.train_file, str) and bool(self.train_file), "must be a file path")
        check("output_dir", isinstance(self.output_dir, str) and bool(self.output_dir), "must be a folder path")
        check("method", self.method in METHODS, f"must be one of {', '.join(METHODS)}, got {_show(self.method)}")
        int_in("n_epochs", 1, auto=True)
        int_in("batch_size", 1, auto=True)
        lrm = self.learning_rate_multiplier
        if lrm != "auto":
            check("learning_rate_multiplier", is_num(lrm) and 0 < lrm <= 10,
                  f"must be 'auto' or a number in (0, 10], got {_show(lrm)}")
        check("seed", is_int(self.seed) and 0 <= self.seed < 2**31, f"must be an integer in [0, 2**31), got {_show(self.seed)}")
        int_in("lora_r", 1)
        check("lora_alpha", is_num(self.lora_alpha) and 0 < self.lora_alpha <= top.lora_alpha,
              f"must be a number > 0{upto(top.lora_alpha)}, got {_show(self.lora_alpha)}")
        check("lora_dropout", is_num(self.lora_dropout) and 0 <= self.lora_dropout < 1,
              f"must be in [0, 1), got {_show(self.lora_dropout)}")
        check("target_modules", isinstance(self.target_modules, (tuple, list)) and 0 < len(self.target_modules) <= 64
              and all(isinstance(m, str) and _MODULE_RE.fullmatch(m) for m in self.target_modules),
              "must be a list of 1 to 64 module names (letters, digits, '_', '.', '-') or [\"all-linear\"]")
        int_in("max_seq_len", 8, none=True)
        check("warmup_ratio", is_num(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
              f"must be in [0, 1), got {_show(self.warmup_ratio)}")
        check("lr_schedule", self.lr_schedule in SCHEDULES,
              f"must be one of {', '.join(SCHEDULES)}, got {_show(self.lr_schedule)}")
        check("weight_decay", is_num(self.weight_decay) and 0 <= self.weight_decay <= top.weight_decay,
              f"must be a number >= 0{upto(top.weight_decay)}, got {_show(self.weight_decay)}")
        check("max_grad_norm", is_num(self.max_grad_norm) and 0 <= self.max_grad_norm <= top.max_grad_norm,
              f"must be a number >= 0{upto(top.max_grad_norm)} (0 disables clipping), got {_show(self.max_grad_norm)}")
        int_in("checkpoint_every_steps", 1, none=True)
        int_in("keep_checkpoints", 1)
        int_in("eval_every_steps", 1, none=True)
        check("device", self.device in DEVICES, f"must be one of {', '.join(DEVICES)}, got {_show(self.device)}")
        check("precision", self.precision in PRECISIONS,
              f"must be one of {', '.join(PRECISIONS)}, got {_show(self.precision)}")
        int_in("pack_tokens", 16, none=True)
        check("packing", isinstance(self.packing, bool), f"must be true or false, got {_show(self.packing)}")
        int_in("num_threads", 1, none=True)
        check("lora_sum", self.lora_sum in LORA_SUMS,
              f"must be one of {', '.join(LORA_SUMS)}, got {_show(self.lora_sum)}")
        for name in ("activation_checkpointing", "compile"):
            v = getattr(self, name)
            check(name, v == "auto" or isinstance(v, bool), f"must be 'auto', true or false, got {_show(v)}")
        check("objective", self.objective in OBJECTIVES,
              f"must be one of {', '.join(OBJECTIVES)}, got {_show(self.objective)}")
        if self.beta != "auto":
            check("beta", is_num(self.beta) and 0 < self.beta <= 2, f"must be 'auto' or a number in (0, 2], got {_show(self.beta)}")
        if self.objective != "dpo" and self.beta != "auto":
            bad.append(("beta", "is a DPO hyperparameter (method type 'dpo')"))
        if self.objective == "dpo" and self.compute_classification_metrics:
            bad.append(("compute_classification_metrics", "is for supervised jobs (a dpo job has reward metrics)"))
        check("compute_classification_metrics", isinstance(self.compute_classification_metrics, bool),
              f"must be true or false, got {_show(self.compute_classification_metrics)}")
        n = self.classification_n_classes
        check("classification_n_classes", n is None or (is_int(n) and 2 <= n <= 10_000),
              f"must be null or an integer in [2, 10000], got {_show(n)}")
        check("classification_positive_class", self.classification_positive_class is None
              or isinstance(self.classification_positive_class, str), "must be a label (a string)")
        check("classification_betas", self.classification_betas is None or (
              isinstance(self.classification_betas, (list, tuple)) and 0 < len(self.classification_betas) <= 8
              and all(is_num(b) and b > 0 for b in self.classification_betas)), "must be 1 to 8 numbers > 0")
        # combinations
        if self.classification_positive_class is not None and self.classification_n_classes not in (None, 2):
            bad.append(("classification_positive_class", "needs a binary task (classification_n_classes 2)"))
        if not self.compute_classification_metrics:
            for name in ("classification_n_classes", "classification_positive_class", "classification_betas"):
                if getattr(self, name) is not None:
                    bad.append((name, "needs compute_classification_metrics true"))
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
    def from_dict(cls, d: dict) -> TrainSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidRequest(f"Unknown training spec fields: {', '.join(unknown)}", param=unknown[0])
        d = dict(d)
        if "target_modules" in d:
            d["target_modules"] = tuple(d["target_modules"])
        if d.get("classification_betas") is not None:
            d["classification_betas"] = tuple(d["classification_betas"])
        return cls(**d)


def field_docs() -> dict[str, str]:
    """Field name -> its one-line doc (parsed from this file's source; for CLI help and docs)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(TrainSpec)).body[0].body
    return {a.target.id: b.value.value for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}
