"""Padding-free packing: structure of packed rows, and packed loss == unpacked loss."""

import pytest
import torch

from openft.data.encode import encode_example
from openft.train.data import IGNORE, epoch_order, pack, step_indices
from openft.train.model import build_model, micro_batch_loss

TEXTS = ["great food", "the soup was cold and the waiter was rude, never again", "ok",
         "an absolutely wonderful evening with friends, the best pasta in town and a lovely view", "meh"]


def examples(tok):
    out = []
    for i, t in enumerate(TEXTS):
        msgs = [{"role": "user", "content": f"Classify: {t}"}, {"role": "assistant", "content": ["positive", "negative"][i % 2]}]
        if i == 3:
            msgs += [{"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes, positive."}]
        out.append(encode_example(tok, {"messages": msgs}, None))
    return out


def test_pack_structure(tiny_tokenizer):
    exs = examples(tiny_tokenizer)
    budget = max(len(e) for e in exs) + 10
    rows = pack(exs, budget)
    assert 1 < len(rows) < len(exs)
    assert all(r.n_tokens <= budget for r in rows)
    assert sum(r.n_examples for r in rows) == len(exs)
    assert sum(r.n_tokens for r in rows) == sum(len(e) for e in exs)
    assert sum(r.n_trained for r in rows) == sum(e.n_trained for e in exs)
    for r in rows:
        pos, lab = r.position_ids[0].tolist(), r.labels[0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0]
        assert len(starts) == r.n_examples and starts[0] == 0
        assert all(lab[s] == IGNORE for s in starts)  # no example predicts its first token from another
    assert [r.n_examples for r in pack(exs, None)] == [1] * len(exs)


def test_epoch_order_is_a_seeded_permutation():
    assert sorted(epoch_order(10, 42, 0)) == list(range(10))
    assert epoch_order(10, 42, 0) == epoch_order(10, 42, 0)
    assert epoch_order(10, 42, 0) != epoch_order(10, 42, 1) != epoch_order(10, 43, 1)
    assert step_indices(10, 4, 42, 2) == (0, epoch_order(10, 42, 0)[8:10])  # short last batch
    assert step_indices(10, 4, 42, 3) == (1, epoch_order(10, 42, 1)[0:4])


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_packed_loss_and_grads_equal_unpacked(tiny_model_dir, tiny_tokenizer, precision, tol):
    torch.manual_seed(0)
    model = build_model(tiny_model_dir, method="lora", precision=precision, device=torch.device("cpu"))
    for name, p in model.named_parameters():  # LoRA B starts at 0; make the adapters matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    exs = examples(tiny_tokenizer)

    def run(rows):
        model.zero_grad()
        total, n = 0.0, 0
        for r in rows:
            ls, k, _ = micro_batch_loss(model, r, precision)
            ls.backward()
            total, n = total + float(ls.detach()), n + k
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        return total / n, grads

    packed_rows = pack(exs, 4096)
    assert len(packed_rows) == 1
    loss_p, g_p = run(packed_rows)
    loss_u, g_u = run(pack(exs, None))
    assert loss_p == pytest.approx(loss_u, rel=tol)
    assert float((g_p - g_u).norm() / g_u.norm()) < tol * 10  # relative error of the whole gradient
    # and changing one example does not change another example's loss in the same row
    other = encode_example(tiny_tokenizer, {"messages": [{"role": "user", "content": "something else entirely"},
                                                         {"role": "assistant", "content": "neutral"}]}, None)
    alone, _, _ = micro_batch_loss(model, pack([exs[1]], None)[0], precision)
    both, _, _ = micro_batch_loss(model, pack([exs[1], other], 4096)[0], precision)
    with_other, _, _ = micro_batch_loss(model, pack([other], None)[0], precision)
    assert float(both.detach()) == pytest.approx(float(alone.detach()) + float(with_other.detach()), rel=tol)


def test_packed_attention_matches_stock_eager_attention(tiny_model_dir, tiny_tokenizer):
    """openft's per-example SDPA on a packed row == the stock eager model run on each example alone."""
    from transformers import AutoModelForCausalLM

    from openft.train.attention import PACKED

    torch.manual_seed(0)
    ours = build_model(tiny_model_dir, method="full", precision="fp32", device=torch.device("cpu")).eval()
    assert ours.config._attn_implementation == PACKED
    stock = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    exs = examples(tiny_tokenizer)[:3]
    row = pack(exs, 4096)[0]
    with torch.no_grad():
        packed = ours(input_ids=row.input_ids, position_ids=row.position_ids, use_cache=False).logits[0]
        order = sorted(exs, key=len, reverse=True)  # pack() orders by decreasing length
        alone = torch.cat([stock(input_ids=torch.tensor([e.input_ids])).logits[0] for e in order])
    assert torch.allclose(packed, alone, atol=1e-4, rtol=1e-4)


def test_packed_attention_refuses_rows_without_position_ids():
    from openft.train.attention import NotPackedAware, packed_sdpa

    q, k = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(NotPackedAware):
        packed_sdpa(torch.nn.Module(), q, k, k, None)
    out, _ = packed_sdpa(torch.nn.Module(), q, k, k, None, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]))
    assert out.shape == (1, 6, 4, 8)
    # each half equals attention over that half alone
    alone, _ = packed_sdpa(torch.nn.Module(), q[:, :, 3:], k[:, :, 3:], k[:, :, 3:], None,
                           position_ids=torch.tensor([[0, 1, 2]]))
    assert torch.allclose(out[:, 3:], alone, atol=1e-6)
