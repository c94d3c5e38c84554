"""What a fine-tuning job on a dataset would do: epochs "auto" picks, tokens trained, time.

`auto_n_epochs(n)` is the trainer's own rule (`openft.train.auto`, pure arithmetic, no torch).

The time estimate divides trained-over tokens (every token of every example, each epoch; the
forward and backward pass cost the same whether a token is trained or masked) by a measured
training pace for this machine, `TOKENS_PER_SECOND` below. The figures are for the 2-core
CPU development machine with LoRA (r=16, all linear layers), batch "auto"; update them from
`benchmarks/` when the trainer changes. An unknown model gets no time estimate.

Knows nothing about files or tokenizers.
"""

from __future__ import annotations

from openft.train.auto import auto_n_epochs  # the trainer's rule: estimates match what a job does

# Training tokens per second (processed, not only trained), per base model, on this machine.
# smollm2: benchmarks/train_throughput.py on an idle machine, 2026-11-22 (268 tokens/s end to
# end, 279 in the loop). openft-tiny: a rough figure, the tiny model is for tests only.
TOKENS_PER_SECOND: dict[str, float] = {
    "openft-tiny": 20_000.0,           # 2-layer random Llama, CPU
    "smollm2-135m-instruct": 270.0,    # SmolLM2-135M LoRA r=16 all-linear, 2 CPU cores (bf16 AMX)
}


def estimate(*, n_examples: int, total_tokens: int, trained_tokens: int, model: str | None,
             n_epochs: int | None = None) -> dict:
    """The job's epochs, tokens and (when the model's pace is known) seconds on this machine."""
    epochs = n_epochs or auto_n_epochs(n_examples)
    pace = TOKENS_PER_SECOND.get(model or "")
    seconds = round(total_tokens * epochs / pace) if pace else None
    return {"n_epochs": epochs, "n_epochs_is_auto": n_epochs is None,
            "tokens_per_epoch": total_tokens, "trained_tokens_per_epoch": trained_tokens,
            "processed_tokens": total_tokens * epochs, "trained_tokens": trained_tokens * epochs,
            "tokens_per_second": pace, "estimated_seconds": seconds}


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no measured pace for this model)"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
