"""Prefill of the sequences that join a step: shared prompt prefixes and one batched attention.

Sequences that join in the same step (an eval run sends every item at once) often begin alike:
the chat template's head, the system prompt, the instructions. `share_prefixes` picks, among the
joining sequences of one adapter, a leader whose whole prompt is fed; every other one whose prompt
starts with at least `MIN_SHARED` of the leader's tokens feeds only the rest, and at each layer the
leader's keys/values for those positions are copied into its cache slot before attention. The
linear layers then run over fewer rows (benchmarks/eval_speed.py's sentiment prompts: 45 tokens
on average, 25 of them the same for every item).

`prompt_attention` runs the members' attention in one call: their queries padded to
[n, heads, tq, head_dim], keys/values read back from their cache slots, and a mask that lets a
query at position p see keys 0..p of its own slot (the copied prefix included). Leaders and
sequences that share nothing keep the runner's own causal attention, unchanged.

Knows the runner's cache layout [layers, 2, slots, kv_heads, len, head_dim] and the `Slot` fields
(feed, adapter, want_prompt_logits); nothing about sampling, scheduling or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_SHARED = 8  # fewer shared tokens than this are fed again (the copy is not worth a group)


def _common(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def share_prefixes(seqs: list, first: int, min_shared: int = MIN_SHARED) -> dict[int, tuple[int, int]]:
    """{slot: (leader slot, shared tokens)} for the joining sequences `seqs` (slots first, first+1, ...)
    that take their prompt's first tokens from a leader's. A leader has the same adapter (keys and
    values depend on it); a member keeps at least one token of its own to feed (its logits come from
    its last row); sequences that want logits at every prompt position never share."""
    out: dict[int, tuple[int, int]] = {}
    todo = [i for i, s in enumerate(seqs) if not s.want_prompt_logits and len(s.feed) > min_shared]
    while len(todo) > 1:
        lead, rest = seqs[todo[0]], []
        for i in todo[1:]:
            s = seqs[i]
            n = _common(lead.feed, s.feed, len(s.feed) - 1) if s.adapter is lead.adapter else 0
            if n >= min_shared:
                out[first + i] = (first + todo[0], n)
            else:
                rest.append(i)
        todo = rest
    return out


@dataclass
class PromptPlan:
    """Where the members' rows go, computed once per step and used by every layer."""

    n: int                      # members (sequences that reuse a leader's prefix)
    tq: int                     # most rows one member feeds
    lk: int                     # keys the longest member attends to (its prefix included)
    slots: torch.Tensor         # [n] their cache slots
    rows: torch.Tensor          # their rows in the step's flat token list
    pad_idx: torch.Tensor       # row -> b * tq + j in the padded query layout
    slot_idx: torch.Tensor      # row -> cache slot
    pos_idx: torch.Tensor       # row -> position
    mask: torch.Tensor          # [n, 1, tq, lk] bool: query at position p sees keys 0..p
    copies: list[tuple[int, torch.Tensor, int]]  # (leader slot, member slots, shared tokens)


def plan_prompts(ranges: list[tuple], positions: list[int], shared: dict[int, tuple[int, int]], device) -> PromptPlan:
    """`ranges[slot]` = (start, end, adapter): that sequence's rows in the flat list; `positions` per row;
    `shared` from share_prefixes (not empty)."""
    members = sorted(shared)
    n = len(members)
    lens = [ranges[m][1] - ranges[m][0] for m in members]
    tq = max(lens)
    rows = torch.cat([torch.arange(ranges[m][0], ranges[m][1]) for m in members])
    pos = torch.tensor(positions)[rows]
    b = torch.repeat_interleave(torch.arange(n), torch.tensor(lens))
    j = torch.cat([torch.arange(ln) for ln in lens])
    lk = int(pos.max()) + 1
    qpos = torch.zeros(n, tq, dtype=torch.long)   # padding rows look at key 0 only (never all masked)
    qpos[b, j] = pos
    mask = (torch.arange(lk)[None, None, :] <= qpos[:, :, None])[:, None]
    slots = torch.tensor(members)
    groups: dict[tuple[int, int], list[int]] = {}
    for slot, (leader, n_shared) in shared.items():
        groups.setdefault((leader, n_shared), []).append(slot)
    copies = [(leader, torch.tensor(group, device=device), n_shared)
              for (leader, n_shared), group in sorted(groups.items())]
    to = lambda t: t.to(device)  # noqa: E731
    return PromptPlan(n, tq, lk, to(slots), to(rows), to(b * tq + j), to(slots[b]), to(pos), to(mask), copies)


def prompt_attention(cache_l: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                     plan: PromptPlan) -> None:
    """One layer, after the leaders' keys/values are in their slots (`cache_l` = cache[layer],
    [2, slots, KV, L, D]): write the members' keys/values, copy each one's shared prefix from its
    leader, attend, fill `out` at the members' rows. q is [T, H, D], k and v [T, KV, D] (the step)."""
    kc, vc = cache_l[0], cache_l[1]
    r = plan.rows
    kc[plan.slot_idx, :, plan.pos_idx] = k[r]
    vc[plan.slot_idx, :, plan.pos_idx] = v[r]
    for leader, members, n_shared in plan.copies:
        cache_l[:, members, :, :n_shared] = cache_l[:, leader:leader + 1, :, :n_shared]
    H, D = q.shape[1], q.shape[2]
    qp = q.new_zeros(plan.n * plan.tq, H, D)
    qp[plan.pad_idx] = q[r]
    qp = qp.view(plan.n, plan.tq, H, D).transpose(1, 2)
    o = F.scaled_dot_product_attention(qp, kc[plan.slots, :, :plan.lk], vc[plan.slots, :, :plan.lk],
                                       attn_mask=plan.mask, enable_gqa=True)   # [n, H, tq, D]
    out[r] = o.transpose(1, 2).reshape(plan.n * plan.tq, H, D)[plan.pad_idx]
