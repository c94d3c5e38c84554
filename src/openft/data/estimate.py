"""What a fine-tuning job on a dataset would do: epochs "auto" picks, tokens trained, time.

`auto_n_epochs(n)` is the trainer's rule when `openft.train` exposes one, else OpenAI's
documented rule (the cookbook's): 3 epochs, raised so that epochs x examples >= 100 (at most
25), lowered so that epochs x examples <= 25,000 (at least 1).

The time estimate divides trained-over tokens (every token of every example, each epoch; the
forward and backward pass cost the same whether a token is trained or masked) by a measured
training pace for this machine, `TOKENS_PER_SECOND` below. The figures are for the 2-core
CPU development machine with LoRA (r=16, all linear layers), batch "auto"; update them from
`benchmarks/` when the trainer changes. An unknown model gets no time estimate.

Knows nothing about files or tokenizers.
"""

from __future__ import annotations

TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25

# Training tokens per second (processed, not only trained), per base model, on this machine.
# Placeholders until the trainer benchmark reports: the lead updates them from its output.
TOKENS_PER_SECOND: dict[str, float] = {
    "openft-tiny": 20_000.0,           # 2-layer random Llama, CPU
    "smollm2-135m-instruct": 600.0,    # SmolLM2-135M LoRA, 2 CPU cores (bf16 AMX)
}


def auto_n_epochs(n_examples: int) -> int:
    """The number of epochs `n_epochs="auto"` gives a job with `n_examples` training examples."""
    try:  # the trainer's rule wins when it exists, so the estimate matches what a job does
        from openft.train.auto import auto_n_epochs as trainer_rule  # type: ignore[import-not-found]
    except ImportError:
        trainer_rule = None
    if trainer_rule is not None:
        return int(trainer_rule(n_examples))
    n = max(1, n_examples)
    epochs = TARGET_EPOCHS
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    elif n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return epochs


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
