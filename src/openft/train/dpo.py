"""Preference fine-tuning (DPO): pairs, their packing, the sigmoid DPO loss and its metrics.

A line `{"input": {"messages", "tools"?}, "preferred_output": [msg], "non_preferred_output": [msg]}`
becomes a `Pair`: the prompt's tokens, then the chosen and the rejected answer's tokens (each
rendered with the model's chat template, cut where the two renderings stop sharing tokens, so
the template's assistant header stays in the prompt; only the answer tokens and the
end-of-turn token count, as `openft.data.encode` masks them).

Packing (`pack_pairs`): with openft's attention (CPU and CUDA) a pair is ONE segment of a packed
row, `prompt + chosen + rejected`, the rejected answer's position ids restarting at the
prompt's length: `openft.train.attention` reads that as a fork (the rejected tokens attend to
the prompt and to themselves, not to the chosen answer), so the prompt is computed once per
pair instead of twice (TRL pads `[prompt+chosen; prompt+rejected]`). Without it (stock SDPA:
OPENFT_ATTENTION=sdpa, or a model that hides position ids) the two sequences are two ordinary
examples of the row. Every answer token is predicted from the hidden state named in `src` (for
the first rejected token: the prompt's last token), so only answer positions go through the
output layer.

Loss, as TRL's `DPOTrainer` with `loss_type="sigmoid"`: with logp = the summed log-probability
of an answer's tokens, Δ = (logp_c - ref_c) - (logp_r - ref_r), loss = mean over pairs of
-logsigmoid(beta * Δ). Rewards (TRL's `rewards/*`): chosen = beta * (logp_c - ref_c), rejected
likewise, accuracy = share of pairs with chosen > rejected, margin = mean(chosen - rejected).

The reference policy is the starting model (the base model, or the `ft:` adapter a job continues
from): its log-probabilities are computed once before the first step (`attach_reference`, no
gradients) and cached in the run folder (`dpo_reference.pt`), so a resumed run uses the
starting model's, not the checkpoint's. No second copy of the weights is ever loaded. Measured
on this 2-core CPU (smollm2-135m, bf16, 8 sentiment pairs = 430 tokens): a training step 1.27 s,
a reference forward with PEFT's adapter disabled 0.48 s (+37% on every step of every epoch),
the same pairs' reference computed once 0.57 s (once per run); the cache also makes the
reference of an `ft:` continuation its starting adapter, which disabling the adapter cannot.

`DPO` (at the end) is this as a training objective (openft.train.objective) for the one loop.

Knows nothing about jobs, files other than the one it reads, or optimizers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from openft.data.encode import encode_example
from openft.data.formats import NON_PREFERRED_KEYS, PREFERRED_KEYS
from openft.data.reader import iter_records
from openft.errors import DataError
from openft.train import metrics as M
from openft.train.data import StepBatches

DEFAULT_BETA = 0.1  # TRL's default; "auto" resolves to it
REFERENCE_FILE = "dpo_reference.pt"
METRICS = M.REWARD_QUANTITIES
"""Per prefix (train_, valid_, full_valid_): TRL's rewards/accuracies, rewards/margins,
rewards/chosen, rewards/rejected."""


@dataclass
class Pair:
    prompt: list[int]
    chosen: list[int]          # answer tokens after the prompt (what is scored)
    rejected: list[int]
    chosen_mask: list[int]     # 1: counts in logp (answer and end-of-turn tokens)
    rejected_mask: list[int]
    truncated: bool = False
    ref: tuple[float, float] | None = None  # reference (chosen, rejected) log-probabilities

    n_trained = 1  # a step's loss is a mean over pairs (the loop divides by this sum: StepBatches.n_target)

    def __len__(self) -> int:
        """Tokens of the pair as one packed segment (prompt once)."""
        return len(self.prompt) + len(self.chosen) + len(self.rejected)

    @property
    def n_sequence_tokens(self) -> int:
        """Tokens of the two full sequences (prompt twice): what a trainer without sharing processes."""
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


@dataclass
class PairData:
    examples: list[Pair]
    n_lines: int
    n_truncated: int
    n_skipped: int  # no scored token left in one of the answers (truncated away)

    @property
    def n_tokens(self) -> int:
        return sum(e.n_sequence_tokens for e in self.examples)

    def __len__(self) -> int:
        return len(self.examples)


def _first(record: dict, keys: tuple[str, ...]):
    return next((record[k] for k in keys if k in record), None)


def encode_pair(tokenizer, record: dict, max_seq_len: int | None) -> Pair:
    """One preference record as a Pair, each full sequence at most max_seq_len tokens."""
    if not isinstance(record, dict) or not isinstance(record.get("input"), dict):
        raise DataError("expected a preference example: {\"input\": {\"messages\": [...]}, \"preferred_output\": "
                        "[...], \"non_preferred_output\": [...]}", field="input", code="invalid_file_format")
    inp = record["input"]
    outs = []
    for keys in (PREFERRED_KEYS, NON_PREFERRED_KEYS):
        out = _first(record, keys)
        if not isinstance(out, list) or len(out) != 1:
            raise DataError(f"{keys[0]} must be a list with one assistant message", field=keys[0],
                            code=f"missing_{keys[0]}")
        ex = {"messages": list(inp.get("messages") or []) + [out[0]]}
        if inp.get("tools"):
            ex["tools"] = inp["tools"]
        outs.append(encode_example(tokenizer, ex, None))
    c, r = outs
    k = 0
    while k < min(len(c), len(r)) and c.input_ids[k] == r.input_ids[k] and not c.mask[k] and not r.mask[k]:
        k += 1
    k = max(1, min(k, len(c) - 1, len(r) - 1))  # the first answer token needs a token before it
    cap = max_seq_len if max_seq_len else 1 << 30
    truncated = max(len(c), len(r)) > cap
    pc, pr = c.input_ids[k:cap], r.input_ids[k:cap]
    return Pair(c.input_ids[:k], pc, pr, c.mask[k:cap], r.mask[k:cap], truncated)


def load_pairs(tokenizer, path: str | Path, max_seq_len: int | None, display_name: str | None = None) -> PairData:
    name = display_name or Path(path).name
    pairs, truncated, skipped, n_lines = [], 0, 0, 0
    for lineno, _text, row in iter_records(path, name=name):
        n_lines += 1
        try:
            p = encode_pair(tokenizer, row, max_seq_len)
        except DataError as e:
            raw = e.message[len(e.locate("")):] if e.field else e.message
            raise DataError(raw, file=name, line=lineno, field=e.field, code=e.code) from e
        truncated += p.truncated
        if not any(p.chosen_mask) or not any(p.rejected_mask):
            skipped += 1
            continue
        pairs.append(p)
    return PairData(pairs, n_lines, truncated, skipped)


# --- packing ---------------------------------------------------------------------------------------

@dataclass
class PairBatch:
    input_ids: torch.Tensor     # (1, T)
    position_ids: torch.Tensor  # (1, T); the rejected answer of a shared pair restarts at len(prompt)
    src: torch.Tensor           # (n,) row index whose hidden state predicts each scored token
    tgt: torch.Tensor           # (n,) the scored token ids
    seq: torch.Tensor           # (n,) 2*i for pair i's chosen answer, 2*i+1 for its rejected one
    ref: torch.Tensor           # (P, 2) reference (chosen, rejected) log-probabilities; NaN when unknown
    pairs: list[Pair] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def to(self, device) -> PairBatch:
        t = lambda x: x.to(device)  # noqa: E731
        return PairBatch(t(self.input_ids), t(self.position_ids), t(self.src), t(self.tgt), t(self.seq),
                         t(self.ref), self.pairs)


def _row(pairs: list[Pair], share_prompt: bool) -> PairBatch:
    ids, pos, src, tgt, seq = [], [], [], [], []

    def answer(tokens, mask, start_pos, prev, s):
        """Append one answer whose first token is predicted from row index `prev`."""
        for j, (t, m) in enumerate(zip(tokens, mask)):
            if m:
                src.append(prev if j == 0 else len(ids) - 1)
                tgt.append(t)
                seq.append(s)
            ids.append(t)
            pos.append(start_pos + j)

    for i, p in enumerate(pairs):
        k = len(p.prompt)
        ids += p.prompt
        pos += range(k)
        last = len(ids) - 1
        answer(p.chosen, p.chosen_mask, k, last, 2 * i)
        if not share_prompt:  # the rejected sequence as an example of its own
            ids += p.prompt
            pos += range(k)
            last = len(ids) - 1
        answer(p.rejected, p.rejected_mask, k, last, 2 * i + 1)
    as_t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    ref = torch.tensor([p.ref if p.ref is not None else (float("nan"),) * 2 for p in pairs], dtype=torch.float64)
    return PairBatch(as_t(ids).unsqueeze(0), as_t(pos).unsqueeze(0), as_t(src), as_t(tgt), as_t(seq), ref, pairs)


def pack_pairs(pairs: list[Pair], budget: int | None, share_prompt: bool = True) -> list[PairBatch]:
    """Rows of at most `budget` tokens (first-fit decreasing, as openft.train.data.pack); None: a pair per row."""
    size = (lambda p: len(p)) if share_prompt else (lambda p: p.n_sequence_tokens)  # noqa: E731
    if budget is None:
        return [_row([p], share_prompt) for p in pairs]
    bins: list[tuple[int, list[Pair]]] = []
    for p in sorted(pairs, key=size, reverse=True):
        for k, (used, members) in enumerate(bins):
            if used + size(p) <= budget:
                members.append(p)
                bins[k] = (used + size(p), members)
                break
        else:
            bins.append((size(p), [p]))
    return [_row(members, share_prompt) for _, members in bins]


def shares_prompt(model) -> bool:
    """Pairs share their prompt when the model runs openft's packed attention (it reads forks)."""
    from openft.train.attention import reads_forks

    return reads_forks(model)


# --- log-probabilities and the loss ----------------------------------------------------------------

def sequence_logps(model, pb: PairBatch, precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """((P, 2) summed log-probabilities of each pair's chosen and rejected answer, correct argmax
    predictions on the chosen answers, scored chosen tokens); the counts are 0-d device tensors
    (nothing here reads the device back: a step does that once, in metrics_of)."""
    from openft.train.attention import row_kwargs
    from openft.train.model import _fast_path_ok, autocast

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    extra = row_kwargs(model, pb)   # the row's block mask (document + fork) where FlexAttention runs
    with autocast(pb.input_ids.device, precision):
        if _fast_path_ok(causal_lm):
            hidden = causal_lm.get_decoder()(input_ids=pb.input_ids, position_ids=pb.position_ids,
                                             use_cache=False, **extra).last_hidden_state     # (1, T, H)
            logits = causal_lm.get_output_embeddings()(hidden[0, pb.src])           # (n, V)
        else:
            logits = causal_lm(input_ids=pb.input_ids, position_ids=pb.position_ids,
                               use_cache=False, **extra).logits[0, pb.src]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, pb.tgt[:, None])[:, 0]   # (n,)
    sums = torch.zeros(2 * pb.n_pairs, device=logp.device, dtype=logp.dtype).index_add(0, pb.seq, logp)
    chosen = pb.seq % 2 == 0
    correct = ((logits.detach().argmax(-1) == pb.tgt) & chosen).sum()
    return sums.view(-1, 2), correct, chosen.sum()


def dpo_loss(logps: torch.Tensor, ref: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """(sum over pairs of -logsigmoid(beta * Δ), the tallies of the rewards, on the device); logps, ref: (P, 2)."""
    rewards = beta * (logps - ref.to(logps))                          # (P, 2): chosen, rejected
    loss = -F.logsigmoid(rewards[:, 0] - rewards[:, 1])
    r = rewards.detach()
    return loss.sum(), {"n": r.shape[0], "chosen": r[:, 0].sum(), "rejected": r[:, 1].sum(),
                        "won": (r[:, 0] > r[:, 1]).sum()}


def pairs_loss(model, pb: PairBatch, precision: str, beta: float, tally: dict) -> tuple[torch.Tensor, int, int]:
    """Summed DPO loss of a packed row; adds its rewards and token counts to `tally`."""
    logps, correct, n_tok = sequence_logps(model, pb, precision)
    loss, t = dpo_loss(logps, pb.ref, beta)
    t.update(correct=correct, tokens=n_tok, loss=loss.detach())
    for k, v in t.items():
        tally[k] = tally.get(k, 0) + v
    return loss, pb.n_pairs, correct


def metrics_of(tally: dict, prefix: str) -> dict:
    """`{prefix}_loss`, `{prefix}_mean_token_accuracy` (chosen answers) and the reward metrics: the
    tallies' device tensors are read back here, once."""
    dev = [k for k, v in tally.items() if torch.is_tensor(v)]
    t = dict(tally, **dict(zip(dev, torch.stack([tally[k].double() for k in dev]).tolist()))) if dev else tally
    n = max(t.get("n", 0), 1)
    value = {"loss": t.get("loss", 0.0) / n, "mean_token_accuracy": t.get("correct", 0) / max(t.get("tokens", 0), 1),
             "reward_accuracy": t.get("won", 0) / n, "reward_margin": (t.get("chosen", 0.0) - t.get("rejected", 0.0)) / n,
             "chosen_reward": t.get("chosen", 0.0) / n, "rejected_reward": t.get("rejected", 0.0) / n}
    return {M.key(prefix, q): value[q] for q in M.QUANTITIES + M.REWARD_QUANTITIES}


@torch.no_grad()
def evaluate_pairs(model, batches: list[PairBatch], precision: str, device, beta: float, prefix: str) -> dict:
    was_training = model.training
    model.eval()
    tally: dict = {}
    for pb in batches:
        pairs_loss(model, pb.to(device), precision, beta, tally)
    model.train(was_training)
    return metrics_of(tally, prefix)


# --- the reference policy --------------------------------------------------------------------------

@torch.no_grad()
def reference_logps(model, pairs: list[Pair], budget: int | None, precision: str, device) -> list[tuple[float, float]]:
    """The model's (chosen, rejected) log-probabilities of each pair, as it is now (eval mode)."""
    was_training = model.training
    model.eval()
    share = shares_prompt(model)
    out: dict[int, tuple[float, float]] = {}
    for pb in pack_pairs(pairs, budget, share):
        logps, _, _ = sequence_logps(model, pb.to(device), precision)
        for p, (c, r) in zip(pb.pairs, logps.double().cpu().tolist()):
            out[id(p)] = (c, r)
    model.train(was_training)
    return [out[id(p)] for p in pairs]


def attach_reference(model, datasets: dict, out_dir: str | Path, budget: int | None, precision: str, device,
                     resumed: bool) -> bool:
    """Set `Pair.ref` on every pair of `datasets` ({"train": PairData, "valid": PairData | None}).

    Read from `out_dir/dpo_reference.pt` when a run resumes (the starting model's, computed when
    the run began); computed from `model` (the starting model) and written there otherwise.
    Returns True when they were computed now."""
    path = Path(out_dir) / REFERENCE_FILE
    if resumed and path.exists():
        saved = torch.load(path, weights_only=True)
        for name, data in datasets.items():
            if data is not None:
                ref = saved[name].tolist()
                if len(ref) != len(data):
                    raise DataError(f"the cached reference log-probabilities ({path}) do not match the {name} data",
                                    code="reference_mismatch")
                for p, r in zip(data.examples, ref):
                    p.ref = (r[0], r[1])
        return False
    saved = {}
    for name, data in datasets.items():
        if data is not None:
            ref = reference_logps(model, data.examples, budget, precision, device)
            for p, r in zip(data.examples, ref):
                p.ref = r
            saved[name] = torch.tensor(ref, dtype=torch.float64)
    tmp = path.with_suffix(".tmp")
    torch.save(saved, tmp)
    tmp.replace(path)
    return True


# --- the objective (openft.train.objective) --------------------------------------------------------

class DPO:
    """Preference pairs as a training objective: the loop's examples are `Pair`s, a step's loss
    is the mean DPO loss over its pairs, its metrics the rewards (`metrics_of`)."""

    pace_suffix = "-dpo"  # both sequences of a pair, the prompt computed once: a pace of its own
    csv_columns = M.DPO_CSV_FIELDS[len(M.CSV_FIELDS):]

    def __init__(self, spec, tokenizer, device, precision: str):
        self.spec, self.tokenizer, self.device, self.precision = spec, tokenizer, device, precision
        self.beta = DEFAULT_BETA
        self.share = True  # pairs share their prompt in a row; decided by the model in `prepare`

    def load(self, path: str, max_len: int | None, display_name: str) -> PairData:
        return load_pairs(self.tokenizer, path, max_len, display_name)

    def resolve(self, hyperparameters: dict) -> None:
        if "beta" not in hyperparameters:
            hyperparameters["beta"] = DEFAULT_BETA if self.spec.beta == "auto" else float(self.spec.beta)
        self.beta = hyperparameters["beta"]

    def prepare(self, model, data: dict, out: Path, budget: int | None, resumed: bool, hooks) -> str | None:
        """The reference policy: the starting model's log-probabilities, once (cached in `out`)."""
        if attach_reference(model, data, out, budget, self.precision, self.device, resumed=resumed):
            hooks.on_event("Computed the reference model's log-probabilities of every pair.")
        self.share = shares_prompt(model)
        return "reference log-probabilities"

    def pack(self, examples: list[Pair], budget: int | None) -> list[PairBatch]:
        return pack_pairs(examples, budget, self.share)

    def step_batches(self, model, examples: list[Pair], budget: int | None) -> StepBatches:
        return StepBatches(pack_pairs(examples, budget, self.share), n_target=sum(e.n_trained for e in examples),
                           tokens=sum(e.n_sequence_tokens for e in examples))

    def loss(self, model, batch: PairBatch, tally: dict) -> torch.Tensor:
        loss, _, _ = pairs_loss(model, batch.to(self.device), self.precision, self.beta, tally)
        return loss

    def metrics(self, tally: dict, prefix: str) -> dict:
        return metrics_of(tally, prefix)

    def evaluate(self, model, batches: list[PairBatch], prefix: str) -> dict:
        return evaluate_pairs(model, batches, self.precision, self.device, self.beta, prefix)

    def epoch_metrics(self, model) -> dict:
        return {}
