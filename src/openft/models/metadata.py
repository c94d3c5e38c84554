"""What a base model is, cheaply: context length, parameter count and size on disk.

`base_metadata(settings, model)` reads the materialized folder's `config.json` and the
safetensors headers (8-byte length + JSON; no tensor is loaded), or, before the packaged GGUF
model is converted, the GGUF file's header. Answers are cached by the files' paths and mtimes, so
listing models stays fast. Anything unknown here (a hub model not in the cache, the tiny model
before it is built) is None, never a download or a build. Knows nothing about HTTP.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from openft.config import Settings
from openft.models.registry import TINY_CONTEXT, BaseModel, safetensors_header

EMPTY = {"context_length": None, "parameters": None, "size_bytes": None}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def base_metadata(settings: Settings, model: BaseModel) -> dict:
    """{"context_length", "parameters", "size_bytes"} of a registry entry (None where unknown)."""
    folder = _folder(settings, model)
    if folder is not None and (folder / "config.json").exists():
        files = sorted(folder.glob("*.safetensors"))
        stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in [folder / "config.json", *files])
        return dict(_folder_metadata(str(folder), stamp))
    if model.source == "gguf-package" and Path(model.location).exists():
        f = Path(model.location)
        return dict(_gguf_metadata(str(f), f.stat().st_mtime_ns))
    if model.source == "tiny":  # not built yet: its context is fixed by build_tiny's config
        return {**EMPTY, "context_length": TINY_CONTEXT}
    return dict(EMPTY)


def _folder(settings: Settings, model: BaseModel) -> Path | None:
    if model.source == "local":
        return Path(model.location)
    if model.source == "hub":  # only what the hub cache already holds: never a download here
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.id, "config.json")
        except Exception:  # noqa: BLE001 - a malformed id or cache: unknown, not an error
            return None
        return Path(found).parent if isinstance(found, str) else None
    return settings.resolved_model_cache_dir() / model.id


@lru_cache(maxsize=64)
def _folder_metadata(folder: str, stamp: tuple) -> tuple:
    cfg = json.loads((Path(folder) / "config.json").read_text())
    cfg = {**cfg.get("text_config", {}), **cfg}
    context = next((int(cfg[k]) for k in _CONTEXT_KEYS if isinstance(cfg.get(k), int)), None)
    params, size = 0, 0
    for name, _mtime, nbytes in stamp[1:]:
        size += nbytes
        header = safetensors_header(name)
        if header is None:
            return tuple({**EMPTY, "context_length": context, "size_bytes": size}.items())
        params += sum(math.prod(t["shape"]) for t in header.values())
    return tuple({"context_length": context, "parameters": params or None, "size_bytes": size or None}.items())


@lru_cache(maxsize=8)
def _gguf_metadata(path: str, mtime_ns: int) -> tuple:
    import gguf

    reader = gguf.GGUFReader(path)  # memory-maps the file; reads the header and tensor infos only
    context = None
    for name, field in reader.fields.items():
        if name.endswith(".context_length") and field.data:
            context = int(field.parts[field.data[0]][0])
    params = sum(int(t.n_elements) for t in reader.tensors)
    return tuple({"context_length": context, "parameters": params or None,
                  "size_bytes": Path(path).stat().st_size}.items())
