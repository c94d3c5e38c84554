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
        chat_template = _chat_template(Path(tmp))
    (out / "Modelfile").write_text(_modelfile(files[-1].name, chat_template))
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


def _chat_template(folder: Path) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).chat_template or ""


def _modelfile(gguf_name: str, chat_template: str) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in chat_template:  # ChatML, spelled in Ollama's template language
        lines += ['TEMPLATE """{{- if .System }}<|im_start|>system',
                  '{{ .System }}<|im_end|>',
                  '{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}',
                  '{{ .Content }}<|im_end|>',
                  '{{ end }}<|im_start|>assistant',
                  '"""',
                  'PARAMETER stop "<|im_end|>"',
                  'PARAMETER stop "<|im_start|>"']
    return "\n".join(lines) + "\n"
