"""`openft chat -m MODEL`: a streaming chat REPL with history (or one shot with -p), via the SDK."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Optional

import typer

from openft.cli.common import client, error_line, fail, state

HELP = "Commands: /reset (forget the conversation), /exit (or Ctrl-D)."


def stream_reply(messages: list[dict], *, model: str, params: dict, stream: bool,
                 write: Callable[[str], None]) -> str:
    """Sends the conversation; writes the answer as it arrives and returns it whole."""
    c = client()
    if not stream:
        resp = c.chat.completions.create(model=model, messages=messages, **params)
        text = resp.choices[0].message.content or ""
        write(text)
        return text
    parts: list[str] = []
    for chunk in c.chat.completions.create(model=model, messages=messages, stream=True, **params):
        for choice in chunk.choices:
            piece = choice.delta.content if choice.delta else None
            if piece:
                parts.append(piece)
                write(piece)
    return "".join(parts)


def chat(model: str = typer.Option(..., "--model", "-m", help="Model id: base, ft:... or a checkpoint."),
         prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Ask once, print the answer, exit."),
         system: Optional[str] = typer.Option(None, "--system", "-s", help="A system message for the conversation."),
         temperature: Optional[float] = typer.Option(None, "--temperature", "-T", min=0.0, max=2.0),
         top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0),
         max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Most tokens per answer."),
         seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same answer."),
         no_stream: bool = typer.Option(False, "--no-stream", help="Wait for whole answers.")):
    """Chat with a model (interactive, streaming; history kept until /reset)."""
    import openai  # here, not at import: every other command (`openft data validate`) stays small
    params = {k: v for k, v in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens),
                                ("seed", seed)) if v is not None}
    base: list[dict] = [{"role": "system", "content": system}] if system else []

    def write(s: str) -> None:
        sys.stdout.write(s)
        sys.stdout.flush()

    if prompt is not None:
        if not prompt.strip():
            fail("--prompt is empty")
        stream_reply(base + [{"role": "user", "content": prompt}], model=model, params=params,
                     stream=not no_stream, write=write)
        write("\n")
        return
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        print(f"Chatting with {model}. {HELP}", file=sys.stderr)
    history = list(base)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            if interactive:
                print(file=sys.stderr)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = list(base)
            print("(conversation forgotten)", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}. {HELP}", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        if interactive:
            write(f"{model.split(':')[-1] if model.startswith('ft:') else model}> ")
        try:
            answer = stream_reply(history, model=model, params=params, stream=not no_stream, write=write)
        except KeyboardInterrupt:
            write("\n")
            history.pop()
            continue
        except openai.APIError as exc:  # interactive: say why and keep the conversation going
            if not interactive:
                raise
            write("\n")
            print(error_line(exc, state().resolved_base_url()), file=sys.stderr)
            history.pop()
            continue
        write("\n")
        history.append({"role": "assistant", "content": answer})
