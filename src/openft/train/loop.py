"""The training loop: one function, top to bottom (nanoGPT / litgpt style).

`train(spec, hooks, settings, resume_from)` loads the base model and the data, resolves "auto"
hyperparameters, then runs optimizer steps of `batch_size` examples, reporting metrics,
progress and checkpoints through `hooks` and polling `hooks.should_stop()` between steps.
`estimated_finish` follows the mean time of the last steps; when it stops, the run writes its
measured pace (`pace.json`, see openft.data.estimate) for later estimates.

What an example is, the micro-batches a step runs, their loss, validation and the metrics come
from the run's objective (openft.train.objective), picked once from the spec's; this
loop is the same for all of them and has no objective of its own. It knows nothing about jobs,
the database or HTTP: the job runner turns the hook calls into events and rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

from openft.config import Settings
from openft.cpu_threads import ThreadPolicy
from openft.data.auto import learning_rate, resolve_hyperparameters
from openft.data.estimate import write_pace
from openft.errors import DataError
from openft.faults import fault_point
from openft.train import checkpoint as ckpt
from openft.train import memory, rules
from openft.train import metrics as M
from openft.train.data import examples_seen, step_indices
from openft.train.hooks import TrainHooks
from openft.train.model import build_model, pick_compile, pick_device, pick_lora_sum, pick_precision
from openft.train.objective import OBJECTIVES, Objective
from openft.train.spec import TrainSpec

DEFAULT_PACK_TOKENS = 4096
PACE_WINDOW = 10  # estimated_finish uses the mean time of the last this-many steps


@dataclass(frozen=True)
class TrainResult:
    status: str                      # succeeded | paused | cancelled
    model_dir: str | None            # final adapter/model folder (succeeded only)
    trained_tokens: int              # tokens processed (all tokens of the examples seen, per epoch)
    total_steps: int
    hyperparameters: dict            # concrete n_epochs, batch_size, learning_rate_multiplier
    results_csv: str
    step: int = 0                    # last completed step
    checkpoint_dir: str | None = None  # newest checkpoint (the one to resume a paused run from)
    metrics: dict = field(default_factory=dict)  # last step's metrics


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Learning-rate factor after `s` completed steps (as transformers' schedulers)."""
    def f(s: int) -> float:
        if s < warmup_steps:
            return s / max(1, warmup_steps)
        progress = (s - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)
    return f


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_run_info(out: Path, spec: TrainSpec, base_dir: str, device, precision: str, hp: dict, n: int) -> None:
    import peft
    import transformers

    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    meta = {"base_model": spec.base_model, "base_dir": base_dir, "device": str(device), "precision": precision,
            "hyperparameters": hp, "n_train_examples": n, "train_file_sha256": _sha256(spec.train_file),
            "valid_file_sha256": _sha256(spec.valid_file) if spec.valid_file else None,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def _memory_plan(spec: TrainSpec, base_dir: str, device, precision: str, lora_sum: str, examples, bs: int,
                 budget: int | None) -> memory.Plan:
    """The run's largest row: a step's `bs` longest examples up to the pack budget (or the longest
    example, unpacked), and the trained positions such a row can hold."""
    lengths = sorted((len(e) for e in examples), reverse=True)
    trained = sorted((e.n_trained for e in examples), reverse=True)
    row = min(budget, sum(lengths[:bs])) if budget else lengths[0]
    trained_row = min(row, sum(trained[:bs])) if budget else trained[0]
    free, total = memory.device_memory(device)
    return memory.plan(memory.Shape.of(base_dir), method=spec.method, precision=precision, tokens_per_row=row,
                       requested=spec.activation_checkpointing, lora_r=spec.lora_r, lora_sum=lora_sum, free=free,
                       total=total, trained_per_row=trained_row)


def _setup_began(now: float) -> float:
    """When this run's setup began: the process's start if it began training within a minute (a
    runner or probe process, whose interpreter and torch start-up the job waits for), else now."""
    try:
        import psutil

        created = psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - only a refinement of the recorded setup time
        return now
    return created if 0 <= now - created < 60 else now


def train(spec: TrainSpec, hooks: TrainHooks, settings: Settings, resume_from: str | None = None) -> TrainResult:
    """Run (or resume) one training run; running out of memory raises memory.OutOfMemory (code
    out_of_memory) with what the run needed and what the device had."""
    seen: dict = {}  # what _train knew when memory ran out: its plan and device
    try:
        return _train(spec, hooks, settings, resume_from, seen)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not memory.is_oom(e):
            raise
        device = seen.get("device")
        free_total = memory.device_memory(device) if device is not None else None
        raise memory.OutOfMemory(memory.oom_message(seen.get("plan"), spec.method, getattr(device, "type", "cpu"),
                                                    free_total)) from e


def _thread_policy(spec: TrainSpec, settings: Settings, device: torch.device) -> ThreadPolicy:
    """The job's num_threads, else OPENFT_TRAIN_THREADS ("auto" adapts on CPU only: on CUDA the
    host threads only launch kernels, and torch's default is left as it is)."""
    setting = spec.num_threads or settings.train_threads
    return ThreadPolicy("default" if setting == "auto" and device.type != "cpu" else setting)


def _eval_window(valid: list, step: int, eval_every: int, bs: int) -> list:
    """The validation examples measured at `step`: max(bs, 8) of them (at most all), the window
    moving on by that many at each evaluation so that the run sees the whole set in turn."""
    k = min(len(valid), max(bs, 8))
    start = (step // eval_every * k) % len(valid)
    return [valid[(start + j) % len(valid)] for j in range(k)]


def _train(spec: TrainSpec, hooks: TrainHooks, settings: Settings, resume_from: str | None, seen: dict) -> TrainResult:
    from transformers import AutoTokenizer

    from openft.models import materialize

    t_enter = _setup_began(time.time())  # setup (start-up, model, data) is part of the measured pace
    spec.validate()
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = seen["device"] = pick_device(spec.device)
    threads = _thread_policy(spec, settings, device)  # retuned between steps: the cores may be shared
    precision = pick_precision(spec.precision, device)
    lora_sum = pick_lora_sum(spec.lora_sum, device, precision)
    base_dir = materialize(settings, spec.base_model)
    marks = {"start-up": time.time() - t_enter}  # seconds of each setup phase, reported in one event

    # --- data: the objective's examples, tokenized with loss masks, truncated to the context ---
    t_phase = time.time()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    objective: Objective = OBJECTIVES[spec.objective](spec, tokenizer, device, precision)  # the one pick
    max_len = rules.truncation_length(rules.model_context_length(base_dir), spec.max_seq_len)
    train_data = objective.load(spec.train_file, max_len, "training_file")
    valid_data = objective.load(spec.valid_file, max_len, "validation_file") if spec.valid_file else None
    for name, d in (("training", train_data), ("validation", valid_data)):
        if d and d.n_truncated:
            hooks.on_event(f"{d.n_truncated} of {d.n_lines} {name} examples were longer than {max_len} tokens "
                           f"and were truncated.", "warn")
        if d and d.n_skipped:
            hooks.on_event(f"{d.n_skipped} {name} examples have no trained tokens (all assistant weights 0 "
                           f"or truncated away) and were skipped.", "warn")
    marks["tokenizing"] = time.time() - t_phase
    if len(train_data) == 0:
        raise DataError("no example in the training file has a trained assistant token.", file="training_file",
                        code="no_trained_tokens")

    # --- hyperparameters: "auto" resolved once; a resumed run keeps the original values -------
    state = ckpt.load_trainer_state(resume_from) if resume_from else None
    hp = state["hyperparameters"] if state else resolve_hyperparameters(
        len(train_data), spec.n_epochs, spec.batch_size, spec.learning_rate_multiplier)
    objective.resolve(hp)
    hooks.on_resolved(hp)
    n, bs = len(train_data), hp["batch_size"]
    steps_per_epoch = math.ceil(n / bs)
    total_steps = hp["n_epochs"] * steps_per_epoch
    eval_every = spec.eval_every_steps or max(1, total_steps // 10)
    longest = max(len(e) for e in train_data.examples)
    budget = max(spec.pack_tokens or DEFAULT_PACK_TOKENS, longest) if spec.packing else None
    plan = seen["plan"] = _memory_plan(spec, base_dir, device, precision, lora_sum, train_data.examples, bs, budget)
    memory.check_fits(plan, spec.method, device.type)  # before loading: a run that clearly cannot fit
    hooks.on_event(f"Activation checkpointing {'on' if plan.checkpointing else 'off'}: {plan.reason} "
                   f"(estimated peak {plan.estimate.describe()}).")

    # --- model and optimizer ------------------------------------------------------------------
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    t_phase = time.time()
    model = build_model(
        base_dir, method=spec.method, precision=precision, device=device, lora_r=spec.lora_r,
        lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, target_modules=spec.target_modules,
        adapter_dir=(resume_from if resume_from else spec.init_adapter) if spec.method != "full" else None,
        full_weights_dir=resume_from if spec.method == "full" else None,
        lora_sum=lora_sum, checkpointing=plan.checkpointing,
        compile=pick_compile(spec.compile, device), liger=True)
    model.train()
    marks["loading the model"] = time.time() - t_phase
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate(spec.method, hp["learning_rate_multiplier"]),
                                  weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, round(spec.warmup_ratio * total_steps), spec.lr_schedule))
    step, trained_tokens = 0, 0
    if state:
        ckpt.restore_optimizer(resume_from, optimizer, scheduler)
        step, trained_tokens = state["step"], state["trained_tokens"]
        hooks.on_event(f"Resumed from checkpoint at step {step}.")
    else:
        _write_run_info(out, spec, base_dir, device, precision, hp, n)
    t_phase = time.time()
    threads.retune()
    phase = objective.prepare(model, {"train": train_data, "valid": valid_data}, out, budget, bool(state), hooks)
    if phase:
        marks[phase] = time.time() - t_phase
    results = ckpt.ResultsCSV(out / "results.csv", keep_until_step=step, extra_fields=objective.csv_columns)
    full_valid = objective.pack(valid_data.examples, budget) if valid_data else []
    n_trainable = sum(p.numel() for p in params)
    hooks.on_event(f"Setup took {time.time() - t_enter:.1f} s: "
                   + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items()) + ".")
    hooks.on_event(f"Training {spec.method} ({n_trainable:,} trainable parameters, {precision}, {device.type}) on "
                   f"{n} examples ({train_data.n_tokens:,} tokens) for {total_steps} steps.")

    def save(step: int, metrics: dict) -> Path:
        epoch = math.ceil(step / steps_per_epoch)
        path = ckpt.save_checkpoint(out, step, model, tokenizer, optimizer, scheduler, {
            "epoch": epoch, "trained_tokens": trained_tokens, "hyperparameters": hp, "metrics": metrics,
            "total_steps": total_steps})
        hooks.on_checkpoint(step, epoch, str(path), metrics)
        for gone in ckpt.prune(out, spec.keep_checkpoints):
            hooks.on_checkpoint_removed(str(gone))
        return path

    def finish(status: str, model_dir=None) -> TrainResult:
        results.close()
        # the pace after this run's first step (kernel selection, allocator warm-up count as setup)
        warm = step - start_step > 1
        t0, s0, k0 = (t_first, start_step + 1, first_tokens) if warm else (t_start, start_step, start_tokens)
        write_pace(out, base_model=spec.base_model, method=spec.method + objective.pace_suffix, device=device.type,
                   setup_seconds=t0 - t_enter, steps=step - s0, processed_tokens=trained_tokens - k0,
                   seconds=time.time() - t0)
        last = ckpt.checkpoint_dirs(out)
        return TrainResult(status, model_dir, trained_tokens, total_steps, hp, str(out / "results.csv"), step,
                           str(last[-1][1]) if last else None, metrics)

    # --- the loop -----------------------------------------------------------------------------
    t_start, start_step, start_tokens = time.time(), step, trained_tokens
    metrics, last_saved = {}, step if state else -1
    recent, t_last = deque(maxlen=PACE_WINDOW), t_start  # seconds of the last steps, all work included
    t_first, first_tokens = t_start, trained_tokens     # when this run's first step ended
    while step < total_steps:
        _, idx = step_indices(n, bs, spec.seed, step)
        batches = objective.step_batches(model, [train_data.examples[i] for i in idx], budget)
        tally: dict = {}  # what the step's micro-batches add up to (the objective's metrics read it)
        for k, mb in enumerate(batches.batches):
            stop = hooks.should_stop() if k else None  # big steps: do not wait for the step to end
            if stop in ("cancel", "pause"):
                optimizer.zero_grad(set_to_none=True)  # the weights are still those of the last step
                if stop == "pause" and step and last_saved != step:
                    save(step, metrics)
                return finish("cancelled" if stop == "cancel" else "paused")
            (objective.loss(model, mb, tally) / batches.n_target).backward()
        fault_point("step", step + 1)  # test-only, inert by default (openft.faults)
        if spec.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        trained_tokens += batches.tokens
        threads.retune()

        # the keys every step reports, in this order (TrainHooks.on_metrics); then the objective's own
        metrics = {"step": step, **{M.key("train", q): None for q in M.QUANTITIES}, "total_steps": total_steps,
                   "elapsed_tokens": trained_tokens, "elapsed_examples": examples_seen(n, bs, step)}
        metrics.update(objective.metrics(tally, "train"))
        epoch_end = step % steps_per_epoch == 0 or step == total_steps
        if valid_data and (step % eval_every == 0 or epoch_end):
            window = _eval_window(valid_data.examples, step, eval_every, bs)
            metrics.update(objective.evaluate(model, objective.pack(window, budget), "valid"))
        if valid_data and epoch_end:
            metrics.update(objective.evaluate(model, full_valid, "full_valid"))
            metrics.update(objective.epoch_metrics(model))
        hooks.on_metrics(metrics)
        results.write(metrics)
        now = time.time()
        recent.append(now - t_last)
        t_last = now
        if step == start_step + 1:
            t_first, first_tokens = now, trained_tokens
        pace = sum(recent) / len(recent)  # the machine's pace now (other jobs, load), not since the start
        hooks.on_progress(step, total_steps, trained_tokens, int(now + pace * (total_steps - step)))
        if epoch_end or (spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0):
            save(step, metrics)
            last_saved = step

        stop = hooks.should_stop()
        if stop == "cancel":
            return finish("cancelled")
        if stop == "pause" and step < total_steps:
            if last_saved != step:
                save(step, metrics)
            return finish("paused")

    # --- the final model ------------------------------------------------------------------------
    return finish("succeeded", str(ckpt.write_final_model(out, model, tokenizer)))
