"""A Hugging Face tokenizer folder loaded without PyTorch, for counting tokens in little memory.

`transformers.AutoTokenizer` imports torch (~350 MB resident before any data is read). For
validation only the Rust tokenizer (`tokenizer.json`) and the chat template are needed:
`LightTokenizer` loads the first with the `tokenizers` library and renders the second with
transformers' own `render_jinja_template` (which does not import torch), passing the special
tokens the way `apply_chat_template` does. It offers the subset of the tokenizer interface
that `openft.data.encode.encode_example` and `openft.data.tokens` use; tests check that
it gives the same text and ids as AutoTokenizer on real data.

`load(folder)` returns None when the folder has no `tokenizer.json` (then use AutoTokenizer).
Knows nothing about models, files of data or the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _token_str(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


class LightTokenizer:
    SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.name_or_path = str(folder)
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg_file = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        self.special_tokens_map = {k: s for k in self.SPECIAL_KEYS if (s := _token_str(cfg.get(k)))}
        template: Any = cfg.get("chat_template")
        jinja = folder / "chat_template.jinja"
        if jinja.is_file():
            template = jinja.read_text()
        if isinstance(template, list):
            template = {t["name"]: t["template"] for t in template}
        self.chat_template = template
        self.model_max_length = cfg.get("model_max_length")
        for k in ("eos", "bos", "pad", "unk"):
            tok = self.special_tokens_map.get(f"{k}_token")
            setattr(self, f"{k}_token", tok)
            setattr(self, f"{k}_token_id", self.backend_tokenizer.token_to_id(tok) if tok else None)

    @classmethod
    def load(cls, folder: str | Path) -> LightTokenizer | None:
        if not (Path(folder) / "tokenizer.json").is_file():
            return None
        return cls(folder)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def _template(self, tools) -> str:
        t = self.chat_template
        if isinstance(t, dict):
            t = t.get("tool_use") if tools and "tool_use" in t else t.get("default")
        if not t:
            raise ValueError("this tokenizer has no chat template")
        return t

    def apply_chat_template(self, messages: list[dict], tools: list | None = None, *, tokenize: bool = False,
                            add_generation_prompt: bool = False, **kwargs) -> Any:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=self._template(tools),
                                            add_generation_prompt=add_generation_prompt,
                                            **{**self.special_tokens_map, **kwargs})
        text = rendered[0]
        if not tokenize:
            return text
        return self.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 **_) -> dict:
        """One text, or a list of them (encoded as a batch: one list per text in each field)."""
        if isinstance(text, list):
            encs = self.backend_tokenizer.encode_batch(text, add_special_tokens=add_special_tokens)
            out = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs]}
            if return_offsets_mapping:
                out["offset_mapping"] = [e.offsets for e in encs]
            return out
        enc = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": enc.ids, "attention_mask": enc.attention_mask}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False, **_) -> str:
        return self.backend_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
