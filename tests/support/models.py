"""Base models made for the tests from the tiny model: one with a Hermes/Qwen-style tool-calling
template, one that ends every answer at its first token; registered as a local folder of a live
server's data folder.

Knows transformers and openft's model registry; nothing about HTTP.
"""

from __future__ import annotations

from pathlib import Path

TOOL_TEMPLATE = Path(__file__).with_name("hermes_template.jinja")


def make_tool_model(tiny_model_dir: str, out: Path) -> Path:
    """The tiny model with a Hermes/Qwen-style tool template and, as in Qwen's vocabulary,
    `<tool_call>` and `</tool_call>` as added (not special) tokens, the embeddings grown to match."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    tok.chat_template = TOOL_TEMPLATE.read_text()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def register(data_dir: Path, name: str, folder: Path) -> None:
    """`folder` registered as base model `name` in the data folder `data_dir`."""
    from openft.config import Settings
    from openft.models import register_local

    register_local(Settings(data_dir=data_dir), name, folder)


def make_ending_model(tiny_model_dir: str, out: Path) -> Path:
    """The tiny model, except that every token id is an end-of-sequence id (its generation config's
    `eos_token_id`): each answer ends at its first token, with finish_reason "stop", as a fine-tuned
    model's does when it has learned to end its turn right after the answer."""
    import json
    import shutil

    shutil.copytree(tiny_model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    gen["eos_token_id"] = list(range(cfg["vocab_size"]))
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out
