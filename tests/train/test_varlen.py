"""Varlen attention for packed rows: every non-default path against the per-example SDPA reference.

On CPU: FlexAttention (FLEX, and VARLEN's fallback to it) for rows of 1, 3 and many examples,
GQA, with and without DPO forks, outputs and gradients; the block mask against `fork_mask`; a
training step through build_model/micro_batch_loss and a DPO forward with each path; the CUDA
kernels' argument plumbing on the meta device (which refuses any read of tensor data, so the
path provably makes no host sync). On CUDA only (`gpu`): flash-attn, torch varlen_attn and
compiled FlexAttention in bf16 against the reference.
"""

import copy
import itertools
import sys
import types
import zlib

import pytest
import torch
import torch.nn.functional as F

from openft.data.encode import encode_example
from openft.train import attention as A
from openft.train.data import pack
from openft.train.model import build_model, micro_batch_loss

CPU = torch.device("cpu")


def positions(lengths, forks=()):
    """Position ids of a row of examples of `lengths`; forks: (example, at, k) -> the example's
    positions from index `at` on restart at k (a DPO branch sharing the first k tokens)."""
    out = []
    for i, n in enumerate(lengths):
        p = list(range(n))
        for ex, at, k in forks:
            if ex == i:
                p[at:] = range(k, k + n - at)
        out += p
    return torch.tensor([out])


ROWS = {"one": ([37], ()), "three": ([5, 17, 9], ()), "many": ([3, 1, 8, 2, 11, 4, 6, 1, 9, 5, 7, 2, 12, 3], ()),
        "forks": ([12, 9, 14], ((0, 8, 5), (2, 6, 3), (2, 10, 4)))}


def qkv(t, h=4, hkv=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, n, t, d, generator=g).requires_grad_() for n in (h, hkv, hkv)]


def run(fn, q, k, v, **kw):
    out, _ = fn(torch.nn.Module(), q, k, v, None, scaling=0.3, **kw)
    (out.float() * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    return out.detach(), grads


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("path", ["flex", "flex_given_mask", "varlen_no_boundaries"])
def test_flex_paths_equal_per_example_sdpa(row, path):
    lengths, forks = ROWS[row]
    pos = positions(lengths, forks)
    q, k, v = qkv(pos.shape[1])
    ref, ref_g = run(A.packed_sdpa, q, k, v, position_ids=pos)
    if path == "flex":
        out, g = run(A.flex_attention_fn, q, k, v, position_ids=pos)
    elif path == "flex_given_mask":
        out, g = run(A.varlen_attention, q, k, v, position_ids=pos, openft_block_mask=A.block_mask(pos))
    else:  # VARLEN on CPU with boundaries: fp32 there, so FlexAttention from the position ids
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        out, g = run(A.varlen_attention, q, k, v, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                     max_length_q=max(lengths), max_length_k=max(lengths))
    assert out.shape == ref.shape == (1, pos.shape[1], 4, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("row", ROWS)
def test_block_mask_is_fork_mask_per_example(row):
    lengths, forks = ROWS[row]
    pos = positions(lengths, forks)
    t = pos.shape[1]
    want = torch.zeros(t, t, dtype=torch.bool)
    s = 0
    for n in lengths:
        want[s:s + n, s:s + n] = A.fork_mask(pos[0, s:s + n])
        s += n
    bm = A.block_mask(pos)
    i = torch.arange(t)
    got = bm.mask_mod(torch.zeros((), dtype=torch.long), torch.zeros((), dtype=torch.long), i[:, None], i[None, :])
    assert torch.equal(got, want)
    if forks:
        assert not torch.equal(want, torch.block_diag(*[torch.ones(n, n).tril().bool() for n in lengths]))


def test_row_structure_needs_no_host_sync():
    """The meta device has no data: any `.tolist()`/`nonzero`/`bool()` on it raises, so a path
    that runs there reads nothing back from the device (the per-example reference does)."""
    pos = positions(*ROWS["forks"]).to("meta")
    A.row_structure(pos)
    A.block_mask(pos)
    q, k, v = (x.detach().to("meta") for x in qkv(pos.shape[1]))
    with pytest.raises(NotImplementedError):  # its .nonzero().tolist() needs the data
        A.packed_sdpa(torch.nn.Module(), q, k, v, None, position_ids=pos)


def test_torch_varlen_call_on_meta_without_sync():
    """torch's varlen_attn (CUDA kernels) has a meta implementation: our call, its arguments
    (window/causal, scale, GQA) and shapes check out here, and nothing is read back."""
    if A.varlen_kernel() == "flex":
        pytest.skip("torch.nn.attention.varlen.varlen_attn is not in this torch")
    q, k, v = (torch.empty(1, h, 13, 16, device="meta", dtype=torch.bfloat16) for h in (4, 2, 2))
    cu = torch.empty(4, device="meta", dtype=torch.int32)
    out = A._torch_varlen(q, k, v, cu, 7, 0.3)
    assert out.shape == (1, 13, 4, 16) and out.dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma", "mistral"])
def test_cuda_varlen_path_through_the_model_on_meta(family, monkeypatch):
    """The CUDA default (VARLEN with torch's varlen_attn) through each family's whole forward
    and backward on the meta device: the packer's boundaries reach every layer's attention
    call as transformers' cu_seq_lens/max_length kwargs, and nothing in the model, the mask
    preparation or our attention reads tensor data back (the meta device would refuse)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from openft.data.encode import Encoded
    from openft.train.data import _row

    if A.varlen_kernel() != "torch":
        pytest.skip("needs torch.nn.attention.varlen.varlen_attn and no flash_attn")
    calls = []
    real = A._torch_varlen
    monkeypatch.setattr(A, "_torch_varlen", lambda *a: (calls.append((a[3].dtype, a[4])), real(*a))[1])
    mb = _row([Encoded(list(range(3, 10)), [0, 0, 0, 1, 1, 1, 1]), Encoded(list(range(3, 8)), [0, 1, 1, 1, 1])])
    cfg = AutoConfig.for_model(family, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=A.attention_for(torch.device("cuda")),
                                                 dtype=torch.bfloat16)
    mb = mb.to("meta")
    kw = A.row_kwargs(model, mb)
    assert sorted(kw) == ["cu_seq_lens_k", "cu_seq_lens_q", "max_length_k", "max_length_q"] and kw["max_length_q"] == 7
    hidden = model.get_decoder()(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False,
                                 **kw).last_hidden_state
    hidden.float().sum().backward()
    assert calls == [(torch.int32, 7)] * 2 and hidden.shape == (1, 12, 64)
    # the training step's loss and accuracy stay on the device too (the loop reads them once per step)
    loss, n, correct = micro_batch_loss(model, mb, "fp32")  # bf16 weights; no autocast on meta
    loss.backward()
    assert n == 8 and loss.device.type == correct.device.type == "meta" and len(calls) == 4


def test_flash_attn_plumbing_with_a_stand_in(monkeypatch):
    """flash-attn is not installable without CUDA; a stand-in with its documented varlen API
    ((T, H, D) q/k/v, int32 cu_seqlens, max lengths, causal, softmax_scale; GQA by head groups)
    checks our layout conversions and arguments against the reference."""
    calls = []

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
        calls.append((cu_q.dtype, max_q, max_k, causal, softmax_scale, tuple(q.shape), tuple(k.shape)))
        b = cu_q.tolist()
        return torch.cat([F.scaled_dot_product_attention(
            q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1), is_causal=causal,
            scale=softmax_scale, enable_gqa=True).transpose(0, 1) for s, e in itertools.pairwise(b)])

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func))
    lengths = ROWS["three"][0]
    pos = positions(lengths)
    q, k, v = qkv(pos.shape[1])
    cu = torch.tensor([0, 5, 22, 31], dtype=torch.int32)
    out = A._flash_attn(q, k, v, cu, 17, 0.3)
    ref, _ = A.packed_sdpa(torch.nn.Module(), q, k, v, None, scaling=0.3, position_ids=pos)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert calls == [(torch.int32, 17, 17, True, 0.3, (31, 4, 16), (31, 2, 16))]


def test_attention_for_picks_and_refuses(monkeypatch):
    from openft.errors import InvalidRequest

    monkeypatch.delenv(A.ENV, raising=False)
    assert A.attention_for(CPU) == A.PACKED
    assert A.attention_for(torch.device("cuda")) == A.VARLEN
    assert A.attention_for(CPU, "flex") == A.FLEX
    monkeypatch.setenv(A.ENV, "flex")
    assert A.attention_for(CPU) == A.FLEX and A.attention_for(torch.device("cuda")) == A.FLEX
    monkeypatch.setenv(A.ENV, "sdpa")
    assert A.attention_for(CPU) == "sdpa"
    monkeypatch.setenv(A.ENV, "fast")
    with pytest.raises(InvalidRequest, match="OPENFT_ATTENTION"):
        A.attention_for(CPU)


def test_pack_computes_boundaries_and_targets_on_the_host(tiny_tokenizer):
    exs = examples(tiny_tokenizer)
    row = pack(exs, 4096)[0]
    lens = sorted((len(e) for e in exs), reverse=True)
    assert row.cu_seqlens.dtype == torch.int32
    assert row.cu_seqlens.tolist() == [0, *torch.tensor(lens).cumsum(0).tolist()] and row.max_len == lens[0]
    assert row.target_index.tolist() == [t for t in range(row.n_tokens - 1) if row.labels[0, t + 1] != -100]
    assert row.n_trained == sum(e.n_trained for e in exs)


# --- through the model -------------------------------------------------------------------------------

def examples(tok):
    texts = ["great food", "the soup was cold and the waiter was rude, never again", "ok", "meh, fine",
             "an absolutely wonderful evening with friends, the best pasta in town and a lovely view"]
    return [encode_example(tok, {"messages": [{"role": "user", "content": f"Classify: {t}"},
                                              {"role": "assistant", "content": ["positive", "negative"][i % 2]}]}, None)
            for i, t in enumerate(texts)]


def lora_model(tiny_model_dir, monkeypatch, choice):
    monkeypatch.setenv(A.ENV, choice)
    torch.manual_seed(0)
    model = build_model(tiny_model_dir, method="lora", precision="fp32", device=CPU)
    for name, p in model.named_parameters():  # LoRA B starts at 0; make the adapters matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())), std=0.05)
    return model


def step(model, rows):
    model.zero_grad()
    total = 0.0
    for r in rows:
        ls, _, _ = micro_batch_loss(model, r, "fp32")
        ls.backward()
        total += float(ls.detach())
    return total, torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("choice", ["flex", "varlen"])
def test_training_step_equals_the_reference(tiny_model_dir, tiny_tokenizer, monkeypatch, choice):
    exs = examples(tiny_tokenizer)
    rows = pack(exs, 4096) + pack(exs[:1], None)            # a row of 5 examples and a row of 1
    ref_loss, ref_g = step(lora_model(tiny_model_dir, monkeypatch, "packed"), rows)
    model = lora_model(tiny_model_dir, monkeypatch, choice)
    assert model.config._attn_implementation == A.CHOICES[choice]
    assert set(A.row_kwargs(model, rows[0])) == {"openft_block_mask"}  # CPU: FlexAttention either way
    loss, g = step(model, rows)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert float((g - ref_g).norm() / ref_g.norm()) < 1e-4


@pytest.mark.parametrize("choice", ["flex", "varlen"])
def test_dpo_forks_through_flex_equal_the_reference(tiny_model_dir, tiny_tokenizer, monkeypatch, tmp_path, choice):
    from openft.train import dpo
    from tests.support.data import write_pairs

    pairs = dpo.load_pairs(tiny_tokenizer, write_pairs(tmp_path / "p.jsonl", 6), None).examples
    ref_model = lora_model(tiny_model_dir, monkeypatch, "packed")
    model = lora_model(tiny_model_dir, monkeypatch, choice)
    assert dpo.shares_prompt(model) and dpo.shares_prompt(ref_model)
    (row,) = dpo.pack_pairs(pairs, 4096, share_prompt=True)
    assert set(A.row_kwargs(model, row)) == {"openft_block_mask"}  # forks: FlexAttention under VARLEN too
    assert bool(((row.position_ids[0, 1:] != row.position_ids[0, :-1] + 1) & (row.position_ids[0, 1:] != 0)).any())
    want, _, _ = dpo.sequence_logps(ref_model, row, "fp32")
    got, _, _ = dpo.sequence_logps(model, row, "fp32")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    got.sum().backward()
    want.sum().backward()
    for (n, a), (_, b) in zip(model.named_parameters(), ref_model.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-3, msg=n)


# --- CUDA only -------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kernel", ["flash_attn", "torch", "flex"])
@pytest.mark.parametrize("row", ROWS)
def test_cuda_kernels_equal_the_reference_in_bf16(kernel, row):
    lengths, forks = ROWS[row]
    if forks and kernel != "flex":
        pytest.skip("rows with forks always run FlexAttention")
    if kernel == "flash_attn":
        pytest.importorskip("flash_attn")
    if kernel == "torch" and A.varlen_kernel() == "flex":
        pytest.skip("no torch.nn.attention.varlen.varlen_attn")
    dev = torch.device("cuda")
    pos = positions(lengths, forks).to(dev)
    q, k, v = (x.detach().to(dev, torch.bfloat16).requires_grad_() for x in qkv(pos.shape[1], h=8, hkv=2, d=64))
    ref, ref_g = run(A.packed_sdpa, q, k, v, position_ids=pos)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    if kernel == "flex":
        out, g = run(A.flex_attention_fn, q, k, v, position_ids=pos)
    else:
        fn = A._flash_attn if kernel == "flash_attn" else A._torch_varlen

        def call(module, q, k, v, mask, scaling=None, **kw):
            return fn(q, k, v, cu, max(lengths), scaling), None
        out, g = run(call, q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@cuda
def test_cuda_training_step_varlen_equals_packed(tiny_model_dir, tiny_tokenizer, monkeypatch):
    """build_model on CUDA picks VARLEN; a bf16 step's loss/grads match the per-example path's,
    and the attention path itself makes no host sync (torch's sync debug mode raises on one)."""
    dev = torch.device("cuda")
    exs = examples(tiny_tokenizer)
    rows = [r.to(dev) for r in pack(exs, 4096)]

    def model_for(choice):
        monkeypatch.setenv(A.ENV, choice)
        torch.manual_seed(0)
        return build_model(tiny_model_dir, method="lora", precision="bf16", device=dev)

    def bf16_step(model):
        model.zero_grad()
        ls, _, _ = micro_batch_loss(model, rows[0], "bf16")
        ls.backward()
        return float(ls), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    ref_loss, ref_g = bf16_step(model_for("packed"))
    monkeypatch.delenv(A.ENV)
    model = model_for("auto")
    assert model.config._attn_implementation == A.VARLEN
    loss, g = bf16_step(model)
    assert loss == pytest.approx(ref_loss, rel=2e-2)
    assert float((g - ref_g).norm() / max(ref_g.norm(), 1e-12)) < 5e-2
    causal_lm = model.get_base_model()
    extra = A.row_kwargs(model, rows[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            causal_lm.get_decoder()(input_ids=rows[0].input_ids, position_ids=rows[0].position_ids,
                                    use_cache=False, **extra)
        ls, _, _ = micro_batch_loss(model, rows[0], "bf16")  # the loop's step: loss, accuracy, backward
        ls.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("impl", ["flex", "packed"])
@pytest.mark.parametrize("family,extra", [("mistral", {"sliding_window": 3}),
                                          ("gemma2", {"sliding_window": 4, "attn_logit_softcapping": 0.5})])
def test_sliding_window_and_softcap_equal_stock_eager(family, extra, impl):
    """FLEX and PACKED (the CPU default) honour a layer's sliding window and logit softcapping
    (Mistral, Gemma 2): a packed row equals the stock eager model run on each example alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    flex_model = AutoModelForCausalLM.from_config(copy.deepcopy(cfg),  # from_config sets the config's implementation
                                                  attn_implementation=A.attention_for(CPU, impl)).eval()
    flex_model.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager"
    assert flex_model.config._attn_implementation == {"flex": A.FLEX, "packed": A.PACKED}[impl]
    lengths = [7, 3, 9]
    ids = torch.randint(3, 100, (1, sum(lengths)), generator=torch.Generator().manual_seed(1))
    pos = positions(lengths)
    with torch.no_grad():
        packed = flex_model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        s, alone = 0, []
        for n in lengths:
            alone.append(eager(input_ids=ids[:, s:s + n], use_cache=False).logits[0])
            s += n
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-4, rtol=1e-4)


def test_gemma2_trains_and_generates_on_the_cpu_default(tmp_path):
    """Gemma 2 (sliding window + softcapping, `_supports_sdpa = False`) loads under PACKED through
    build_model, its packed training loss and gradients equal eager's on each example alone, and
    a cached generate (the unpacked path) gives eager's greedy tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from openft.train.model import build_model

    cfg = AutoConfig.for_model("gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, sliding_window=4,
                               attn_logit_softcapping=0.5)
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    eager.save_pretrained(tmp_path)
    model = build_model(str(tmp_path), method="full", precision="fp32", device=CPU)
    assert model.config._attn_implementation == A.PACKED
    lengths = [7, 3, 9]
    ids = torch.randint(3, 100, (1, sum(lengths)), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, position_ids=positions(lengths), labels=ids, use_cache=False).logits.sum().backward()
    s = 0
    for n in lengths:
        eager(input_ids=ids[:, s:s + n], use_cache=False).logits.sum().backward()
        s += n
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)
    prompt = ids[:, :9]
    with torch.no_grad():
        mine = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        theirs = eager.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    assert mine.tolist() == theirs.tolist()
