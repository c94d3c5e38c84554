"""Write a Llama-architecture Hugging Face model as GGUF (f16 or q8_0) with its tokenizer.

Tensor names and the q/k row permutation follow llama.cpp's convert_hf_to_gguf.py, so llama.cpp,
Ollama and transformers' GGUF loader (`from_pretrained(..., gguf_file=...)`) read the file.
Tokenizer metadata (byte-level BPE: tokens, types, merges, special ids, chat template) comes
from the model folder through gguf-py's SpecialVocab. Norms stay f32, as llama.cpp keeps them.

Knows nothing about adapters (the caller merges first), serving or HTTP.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from openft.errors import InvalidRequest

_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def _gguf_name(name: str) -> str | None:
    if name in _TOP:
        return _TOP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m and m[2] in _LAYER:
        return f"blk.{m[1]}.{_LAYER[m[2]]}.weight"
    return None


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (halves) -> GGML's (interleaved pairs), as convert_hf_to_gguf does."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model_dir: str | Path, out_file: str | Path, qtype: str = "f16", *, name: str = "openft-model",
               pre_tokenizer: str = "default") -> Path:
    """Convert the HF folder `model_dir` (Llama, safetensors) to one GGUF file."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if qtype not in ("f16", "q8_0"):
        raise InvalidRequest(f"GGUF type must be f16 or q8_0, not {qtype!r}.", param="format")
    model_dir, out_file = Path(model_dir), Path(out_file)
    cfg = AutoConfig.from_pretrained(model_dir)
    if cfg.model_type != "llama":
        raise InvalidRequest(f"GGUF export supports the Llama architecture; {model_dir} is {cfg.model_type!r}. "
                             "Export it as 'merged' and convert with llama.cpp's convert_hf_to_gguf.py.", param="format")
    tok = AutoTokenizer.from_pretrained(model_dir)
    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in ("default", None):
        raise InvalidRequest(f"GGUF export does not handle rope_type {rope.get('rope_type')!r}.", param="format")
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))

    w = gguf.GGUFWriter(str(out_file), arch="llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(theta))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(w, tok, model_dir, cfg.vocab_size, pre_tokenizer)

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, t in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue
        g = _gguf_name(hf_name)
        if g is None:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            raise InvalidRequest(f"GGUF export: no GGUF name for tensor {hf_name!r}.", param="format")
        a = t.detach().float().numpy()
        if g.endswith("attn_q.weight"):
            a = _permute(a, n_head)
        elif g.endswith("attn_k.weight"):
            a = _permute(a, n_kv)
        if a.ndim == 1:
            w.add_tensor(g, a.astype(np.float32))
        elif qtype == "q8_0" and a.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(a.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(g, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(g, a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_file


def _add_tokenizer(w, tok, model_dir: Path, vocab_size: int, pre: str) -> None:
    import gguf

    tj = model_dir / "tokenizer.json"
    model_type = json.loads(tj.read_text()).get("model", {}).get("type") if tj.exists() else None
    if model_type != "BPE":
        raise InvalidRequest(f"GGUF export supports byte-level BPE tokenizers; {model_dir} has {model_type!r}.",
                             param="format")
    n = max(vocab_size, len(tok))
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for i, added in tok.added_tokens_decoder.items():
        if i < len(types):
            types[i] = gguf.TokenType.CONTROL if added.special else gguf.TokenType.USER_DEFINED
    for i in range(len(tokens), n):           # the embedding matrix may be larger than the vocab
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(str(model_dir), load_merges=True, n_vocab=n)
    special.add_to_gguf(w)
