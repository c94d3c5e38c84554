"""The Ollama Modelfile written by the GGUF export, rendered the way Ollama renders it (Go template
subset + Ollama's message handling, see tests/support/ollama_template.py), gives the same prompt as the model's
own chat template for the same conversation; its stops are the template's turn markers."""

from __future__ import annotations

import pytest

from openft.serve.export import export_model
from tests.support.ollama_template import execute, parse_modelfile, render_chat

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?\nThanks."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "  Tell me a joke.  "}],
]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, model_cache, tmp_path_factory):
    from openft.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), model_cache_dir=model_cache)
    out = export_model(settings, "openft-tiny", None, None, "gguf", tmp_path_factory.mktemp("gguf"),
                       gguf_types=("f16",))
    return out, parse_modelfile((out / "Modelfile").read_text())


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["user", "system", "multi-turn", "no-system"])
def test_modelfile_renders_conversations_as_the_chat_template(exported, tiny_tokenizer, conversation):
    _, modelfile = exported
    assert modelfile["FROM"] == "./model-f16.gguf"
    want = tiny_tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert render_chat(modelfile, conversation) == want


def test_modelfile_stops_are_the_templates_turn_markers(exported, tiny_tokenizer):
    import gguf

    out, modelfile = exported
    specials = set(tiny_tokenizer.all_special_tokens) | {t.content for t in tiny_tokenizer.added_tokens_decoder.values()}
    assert modelfile["stop"] and set(modelfile["stop"]) <= specials
    assert tiny_tokenizer.eos_token in modelfile["stop"] == ["<|im_end|>", "<|im_start|>"]
    reader = gguf.GGUFReader(str(out / "model-f16.gguf"))
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[field("tokenizer.ggml.eos_token_id")] == "<|im_end|>"     # llama.cpp and Ollama stop there too
    assert field("tokenizer.chat_template") == tiny_tokenizer.chat_template


def test_the_go_template_subset_behaves_as_go():
    """Cases whose output Go's text/template defines (trim markers, else if, range/else, $, not/eq)."""
    assert execute("a  {{- .X -}}  \n b", {"X": "1"}) == "a1b"
    assert execute("a {{.X}} b", {"X": "1"}) == "a 1 b"
    assert execute("{{ if not .X }}n{{ else if eq .Y \"y\" }}y{{ else }}e{{ end }}", {"X": "", "Y": "z"}) == "n"
    assert execute("{{ if not .X }}n{{ else if eq .Y \"y\" }}y{{ else }}e{{ end }}", {"X": "1", "Y": "y"}) == "y"
    assert execute("{{ range .L }}[{{ .A }}{{ $.S }}]{{ else }}none{{ end }}", {"L": [{"A": "1"}, {"A": "2"}], "S": "s"}) \
        == "[1s][2s]"
    assert execute("{{ range .L }}x{{ else }}none{{ end }}", {"L": []}) == "none"
    with pytest.raises(ValueError):
        execute("{{ template \"x\" }}", {})
    with pytest.raises(ValueError):
        execute("{{ .Missing }}", {})
