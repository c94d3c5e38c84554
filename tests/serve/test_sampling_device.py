"""Batched sampling on the logits' device (serve/sampling.py): greedy rows, the sampled
distribution, top_p's nucleus, masked tokens, seeds that repeat whatever the batch, and logprobs
carried home with the ids. Runs on CPU tensors here; the same code runs on CUDA tensors."""

from __future__ import annotations

import math
import random

import torch

from openft.serve.sampling import Picked, make_generator, sample_batch, token_logprob


def draws(logits_row: torch.Tensor, n: int, temperature: float, top_p: float, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    logits = logits_row[None].repeat(n, 1)
    return sample_batch(logits, [temperature] * n, [top_p] * n, [rng.random() for _ in range(n)]).tolist()


def assert_frequencies(got: list[int], probs: list[float]) -> None:
    n = len(got)
    for tok, p in enumerate(probs):
        f = got.count(tok) / n
        assert abs(f - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (tok, f, p)


def test_greedy_rows_take_the_argmax_and_sampled_rows_follow_the_distribution():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    ids = sample_batch(logits, [0.0] * 6, [1.0] * 6, [None] * 6)
    assert ids.tolist() == logits.argmax(-1).tolist()
    row = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    for t in (1.0, 0.5):
        probs = torch.softmax(row / t, -1).tolist()
        assert_frequencies(draws(row, 4000, t, 1.0), probs)


def test_top_p_keeps_only_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.1, 0.1])
    got = draws(probs.log(), 4000, 1.0, 0.6)
    assert set(got) == {0, 1}
    assert_frequencies(got, [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])


def test_masked_tokens_are_never_chosen_even_at_the_top_of_the_range():
    row = torch.full((100,), -math.inf)
    row[[3, 40, 97]] = torch.tensor([0.0, 1.0, -1.0])
    logits = row[None].repeat(4, 1)
    for top_p in (1.0, 0.9):
        ids = sample_batch(logits, [1.0] * 4, [top_p] * 4, [0.0, 0.5, 0.999999999, 1 - 2 ** -53]).tolist()
        assert set(ids) <= {3, 40, 97}


def test_a_row_picks_the_same_token_whatever_else_is_in_the_batch():
    torch.manual_seed(1)
    row = torch.randn(1000)
    alone = []
    g = make_generator(42, 0)
    for _ in range(20):
        alone.append(sample_batch(row[None], [0.8], [0.9], [g.random()]).item())
    g = make_generator(42, 0)
    mixed = []
    for _step in range(20):
        others = torch.randn(5, 1000)
        batch = torch.cat([others[:3], row[None], others[3:]])
        temps = [0.0, 1.0, 0.7, 0.8, 0.0, 1.3]
        us = [None, random.random(), random.random(), g.random(), None, random.random()]
        mixed.append(sample_batch(batch, temps, [1.0, 0.5, 1.0, 0.9, 1.0, 0.95], us)[3].item())
    assert mixed == alone
    assert len(set(alone)) > 3                        # it did sample
    assert make_generator(42, 0).random() != make_generator(42, 1).random()   # choices differ


def token_bytes(t: int):
    return f"t{t}", [t % 256]


def test_picked_brings_ids_and_logprobs_home_as_the_per_row_function_computes_them():
    torch.manual_seed(2)
    logits = torch.randn(4, 30)
    chosen = sample_batch(logits, [0.0, 1.0, 0.0, 1.0], [1.0] * 4, [None, 0.3, None, 0.8])
    rows = {1: 3, 2: 0, 3: 5}
    picked = Picked(chosen, Picked.lp_of(logits, rows), rows)
    assert picked.ids == chosen.tolist()
    for r, top in rows.items():
        want = token_logprob(logits[r], picked.ids[r], top, token_bytes)
        got = picked.entry(r, top, token_bytes)
        assert got["token"] == want["token"] and abs(got["logprob"] - want["logprob"]) < 1e-5
        assert [e["token"] for e in got["top_logprobs"]] == [e["token"] for e in want["top_logprobs"]]
        assert len(got["top_logprobs"]) == top
    no_lp = Picked(chosen, None, {})
    assert no_lp.ids == picked.ids


def test_top_p_over_a_large_vocabulary_picks_what_a_full_sort_picks():
    """On CPU the nucleus is looked for among the 256 most likely tokens first: same picks as sorting all."""
    torch.manual_seed(3)
    logits = torch.randn(8, 5000) * 4          # peaked: the nuclei fit in 256 tokens
    logits[0] = torch.randn(5000) * 0.1        # flat: this row's nucleus does not, the whole row is sorted
    us = [random.Random(i).random() for i in range(8)]
    got = sample_batch(logits, [1.0] * 8, [0.9] * 8, us).tolist()
    probs = torch.softmax(logits, -1)
    sp, order = probs.sort(-1, descending=True)
    cum = sp.cumsum(-1)
    sp = sp.masked_fill((cum - sp) >= 0.9, 0.0)
    cdf = sp.cumsum(-1)
    want = [int(order[i, torch.searchsorted(cdf[i], us[i] * cdf[i, -1], right=True)]) for i in range(8)]
    assert got == want
