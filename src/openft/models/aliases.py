"""Model aliases: names other servers use (`gpt-4o-mini-2024-07-18`, `gpt-3.5-turbo`) mapped by the
operator onto models this server has, so tutorial code runs unchanged.

`OPENFT_MODEL_ALIASES` is a JSON object (`{"gpt-4o-mini*": "smollm2-135m-instruct"}`) or the path
of a JSON or TOML file in the format `openft migrate --map-file` reads (`read_model_table`, which
the migration planner uses too). Keys are exact names or fnmatch patterns (`*`, `?`, `[...]`);
`match` is the one lookup rule, shared with the migration's `ModelMap`: exact names first, then
patterns in the order given. Values name a base model or an `ft:` model.

Knows nothing about HTTP or the database; `openft.store.resolve` applies the alias.
"""

from __future__ import annotations

import fnmatch
import json
from functools import lru_cache
from pathlib import Path

from openft.config import Settings
from openft.errors import InvalidRequest

PATTERN_CHARS = "*?["


def is_pattern(name: str) -> bool:
    return any(c in name for c in PATTERN_CHARS)


def match(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]], name: str) -> tuple[str, str] | None:
    """The (source, target) pair of `pairs` that `name` matches: an exact source first, then the
    first pattern (fnmatch, case-sensitive) that matches; None when none does."""
    for src, dst in pairs:
        if src == name:
            return src, dst
    for src, dst in pairs:
        if is_pattern(src) and fnmatch.fnmatchcase(name, src):
            return src, dst
    return None


def parse_table(data, where: str, param: str) -> list[tuple[str, str]]:
    """A table {source: target} (or the same under `models`) as pairs; InvalidRequest naming `where`."""
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = data["models"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip()
                                             for k, v in data.items()):
        raise InvalidRequest(f"{where}: expected a table of source model = target model (strings)", param=param)
    return [(k.strip(), v.strip()) for k, v in data.items()]


def read_model_table(path: str | Path, where: str, param: str) -> list[tuple[str, str]]:
    """`{"gpt-4o-mini*": "smollm2-135m-instruct"}` as JSON, or the same as TOML (top level or under
    [models]), read from `path`; errors start with `where` (the flag or setting that named it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidRequest(f"{where} {path}: {e.strerror or e}", param=param) from None
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        raise InvalidRequest(f"{where} {path}: not valid {'TOML' if toml else 'JSON'}: {e}", param=param) from None
    return parse_table(data, f"{where} {path}", param)


def aliases(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The operator's aliases as (source, target) pairs, in the order given; () when unset."""
    value = (settings.model_aliases or "").strip()
    if not value:
        return ()
    if value.startswith("{"):
        return _from_json(value)
    path = Path(value).expanduser()
    stat = path.stat() if path.exists() else None
    return _from_file(str(path), stat.st_mtime_ns if stat else 0)


@lru_cache(maxsize=8)
def _from_json(value: str) -> tuple[tuple[str, str], ...]:
    try:
        data = json.loads(value)
    except ValueError as e:
        raise InvalidRequest(f"OPENFT_MODEL_ALIASES: not valid JSON: {e}", param="model_aliases") from None
    return tuple(parse_table(data, "OPENFT_MODEL_ALIASES", "model_aliases"))


@lru_cache(maxsize=8)
def _from_file(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    return tuple(read_model_table(path, "OPENFT_MODEL_ALIASES", "model_aliases"))


def alias_target(settings: Settings, model: str) -> str | None:
    """The model an alias maps `model` onto, or None when no alias matches it."""
    found = match(aliases(settings), model)
    return found[1] if found else None
