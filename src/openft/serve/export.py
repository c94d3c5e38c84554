"""Export a served model: the PEFT adapter as is, a merged HF folder, or GGUF for llama.cpp/Ollama.

`export_model(settings, base_model, adapter_path, full_model_path, fmt, out_dir)`:
- `peft`: the adapter folder copied (loads with `PeftModel.from_pretrained` on the base);
- `merged`: base + adapter merged into one safetensors HF folder `transformers` loads alone;
- `gguf`: `model-f16.gguf` and `model-q8_0.gguf` (Llama architecture) plus an Ollama `Modelfile`.
Knows nothing about the database or HTTP: the caller resolves the model id to paths.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from openft.config import Settings
from openft.errors import InvalidRequest

FORMATS = ("peft", "merged", "gguf")
_SMOLLM_TOKENIZER_MODELS = ("smollm2-135m-instruct", "openft-tiny")


def export_model(settings: Settings, base_model: str, adapter_path: str | None, full_model_path: str | None,
                 fmt: str, out_dir: str | Path, *, gguf_types: tuple[str, ...] = ("f16", "q8_0"),
                 progress: Callable[[float, str], None] | None = None) -> Path:
    """Write the model in `fmt` into `out_dir` (created); returns `out_dir`. `progress(fraction, stage)`
    is called as each stage starts (merging, writing each GGUF type) and with 1.0 at the end."""
    say = progress or (lambda fraction, stage: None)
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}.", param="format")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "peft":
        if not adapter_path:
            raise InvalidRequest("Format 'peft' needs a LoRA fine-tuned model; this one has full weights "
                                 "(use --format merged).", param="format")
        for f in Path(adapter_path).iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
        return out
    if fmt == "merged":
        say(0.0, "merging")
        save_merged(settings, base_model, adapter_path, full_model_path, out)
        say(1.0, "done")
        return out
    with tempfile.TemporaryDirectory(dir=out, prefix=".merged-") as tmp:
        say(0.0, "merging")
        save_merged(settings, base_model, adapter_path, full_model_path, Path(tmp))
        from openft.serve.gguf_export import write_gguf

        pre = "smollm" if base_model in _SMOLLM_TOKENIZER_MODELS else "default"
        files = []
        for i, q in enumerate(gguf_types):
            say(0.4 + 0.6 * i / len(gguf_types), f"writing {q} GGUF")
            files.append(write_gguf(tmp, out / f"model-{q}.gguf", q, name=base_model, pre_tokenizer=pre))
        from transformers import AutoTokenizer

        modelfile = ollama_modelfile(files[-1].name, AutoTokenizer.from_pretrained(tmp))
    (out / "Modelfile").write_text(modelfile)
    say(1.0, "done")
    return out


def save_merged(settings: Settings, base_model: str, adapter_path: str | None, full_model_path: str | None,
                out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if full_model_path:
        src = full_model_path
    else:
        from openft.models import materialize

        src = materialize(settings, base_model)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if adapter_path and not full_model_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(str(out))


def ollama_modelfile(gguf_name: str, tok) -> str:
    """An Ollama Modelfile for `gguf_name`: for a ChatML chat template, a TEMPLATE in Ollama's Go
    template language that renders a conversation as the tokenizer's template does, the template's
    default system prompt as SYSTEM, and its turn markers as stop tokens.

    Ollama hands the template every message, system ones included, in `.Messages` (`.System`
    repeats them), and puts SYSTEM in front of a conversation whose first message is not a system
    one; so the template ranges over `.Messages` only, and SYSTEM carries what the chat template
    writes when no system message is given (SmolLM2's "You are a helpful AI assistant named SmolLM,
    trained by Hugging Face"). Other template families get FROM only (the GGUF file carries the
    chat template itself). tests/serve/test_gguf_modelfile.py renders both and compares."""
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in (tok.chat_template or ""):
        lines += ['TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}',
                  '{{ .Content }}<|im_end|>',
                  '{{ end }}<|im_start|>assistant',
                  '"""']
        default = _default_system(tok)
        if default:
            lines.append(f'SYSTEM """{default}"""')
        lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    return "\n".join(lines) + "\n"


def _default_system(tok) -> str | None:
    """The system prompt a ChatML template writes for a conversation that has none, if any."""
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = "<|im_start|>system\n"
    if not text.startswith(head) or "<|im_end|>" not in text:
        return None
    default = text[len(head):text.index("<|im_end|>")]
    return default if '"""' not in default else None
