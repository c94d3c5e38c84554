"""A deterministic function-calling dataset: chat lines in OpenAI's fine-tuning format with
`tools` and assistant `tool_calls`, for the README's tool-calling example and
benchmarks/tool_calls.py.

Four functions (`TOOLS`: get_weather, convert_currency, set_timer, translate) and, for each,
several user phrasings filled with random values. `examples(n, seed=, split=)` gives n lines;
"train" and "test" use disjoint phrasings (the test split asks in words the model never saw) and
the same seed always gives the same lines. Each line offers all four tools and holds one call;
with `with_results`, every other line goes on with the tool's result and a short answer.
Write them with `write_jsonl`, or `python -m openft.data.tool_examples OUT.jsonl [N] [--split test]`.

Knows nothing about models, tokenizers or the API.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

CITIES = ["Paris", "Oslo", "Tokyo", "Lima", "Cairo", "Sydney", "Toronto", "Berlin", "Madrid", "Nairobi"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]
LANGUAGES = ["French", "German", "Spanish", "Italian", "Japanese"]
PHRASES = ["good morning", "thank you very much", "where is the station", "I would like a coffee",
           "see you tomorrow", "how much does this cost", "the meeting is at noon", "happy birthday"]


def _fn(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


TOOLS = [
    _fn("get_weather", "Current weather in a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city", "unit"]),
    _fn("convert_currency", "Convert an amount of money from one currency to another.",
        {"amount": {"type": "number"}, "from_currency": {"type": "string", "enum": CURRENCIES},
         "to_currency": {"type": "string", "enum": CURRENCIES}}, ["amount", "from_currency", "to_currency"]),
    _fn("set_timer", "Start a countdown timer.",
        {"minutes": {"type": "integer", "minimum": 1, "maximum": 180}}, ["minutes"]),
    _fn("translate", "Translate text into another language.",
        {"text": {"type": "string"}, "target_language": {"type": "string", "enum": LANGUAGES}},
        ["text", "target_language"]),
]

# (phrasings, argument maker, result maker) per function; the last two phrasings are the test split's
_UNIT_WORD = {"celsius": ["in celsius", "in degrees C", "in °C"], "fahrenheit": ["in fahrenheit", "in °F", "in degrees F"]}
ASKS = {
    "get_weather": [
        "What's the weather in {city} {unit_word}?", "How warm is it in {city} right now, {unit_word}?",
        "Tell me the current weather for {city} {unit_word}.", "Weather in {city} please, {unit_word}.",
        "Is it cold in {city} today? Give it {unit_word}.", "I'm flying to {city}: what's it like there {unit_word}?",
        "Check the temperature in {city} {unit_word}.", "{city} weather {unit_word}?"],
    "convert_currency": [
        "Convert {amount} {from_currency} to {to_currency}.", "How much is {amount} {from_currency} in {to_currency}?",
        "What do I get for {amount} {from_currency} in {to_currency}?", "{amount} {from_currency} to {to_currency} please.",
        "Change {amount} {from_currency} into {to_currency}.", "I have {amount} {from_currency}; what is that in {to_currency}?",
        "Exchange {amount} {from_currency} for {to_currency}.", "{amount} {from_currency} in {to_currency}?"],
    "set_timer": [
        "Set a timer for {minutes} minutes.", "Start a {minutes} minute countdown.",
        "Remind me in {minutes} minutes.", "Timer: {minutes} min.",
        "Can you time {minutes} minutes for my tea?", "Count down {minutes} minutes, please.",
        "I need a {minutes}-minute timer.", "Wake me up in {minutes} minutes."],
    "translate": [
        "Translate '{text}' into {target_language}.", "How do you say '{text}' in {target_language}?",
        "What is '{text}' in {target_language}?", "Please put '{text}' into {target_language}.",
        "Say '{text}' in {target_language}.", "I need '{text}' in {target_language}.",
        "Give me the {target_language} for '{text}'.", "'{text}' in {target_language}, please."],
}
TEST_PHRASINGS = 2   # the last phrasings of each function: asked only in the test split


def _arguments(name: str, rng: random.Random) -> dict:
    if name == "get_weather":
        return {"city": rng.choice(CITIES), "unit": rng.choice(["celsius", "fahrenheit"])}
    if name == "convert_currency":
        a, b = rng.sample(CURRENCIES, 2)
        return {"amount": rng.choice([5, 20, 50, 100, 250, 1000, 12.5, 99.99]), "from_currency": a, "to_currency": b}
    if name == "set_timer":
        return {"minutes": rng.choice([1, 3, 5, 10, 15, 20, 25, 30, 45, 60, 90])}
    return {"text": rng.choice(PHRASES), "target_language": rng.choice(LANGUAGES)}


def _result_and_answer(name: str, args: dict, rng: random.Random) -> tuple[str, str]:
    if name == "get_weather":
        t = rng.randint(-5, 35) if args["unit"] == "celsius" else rng.randint(20, 95)
        sign = "°C" if args["unit"] == "celsius" else "°F"
        return json.dumps({"temperature": t, "sky": "clear"}), f"It is {t}{sign} and clear in {args['city']}."
    if name == "convert_currency":
        out = round(args["amount"] * rng.uniform(0.5, 1.5), 2)
        return (json.dumps({"amount": out, "currency": args["to_currency"]}),
                f"{args['amount']} {args['from_currency']} is about {out} {args['to_currency']}.")
    if name == "set_timer":
        return json.dumps({"ok": True}), f"Your {args['minutes']}-minute timer is running."
    return json.dumps({"translation": "..."}), "Here is the translation."


def ask_text(name: str, args: dict, phrasing: str, rng: random.Random) -> str:
    """The user's request for this call, in one phrasing."""
    words = {**args, "unit_word": rng.choice(_UNIT_WORD[args["unit"]])} if name == "get_weather" else args
    return phrasing.format(**words)


def example(name: str, args: dict, ask: str, call_id: str, result: tuple[str, str] | None = None) -> dict:
    """One chat line: the tools, the request, the assistant's call (and the result and answer)."""
    messages = [{"role": "user", "content": ask},
                {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
                    "name": name, "arguments": json.dumps(args)}}]}]
    if result is not None:
        messages += [{"role": "tool", "tool_call_id": call_id, "content": result[0]},
                     {"role": "assistant", "content": result[1]}]
    return {"tools": TOOLS, "parallel_tool_calls": False, "messages": messages}


def examples(n: int, *, seed: int = 0, split: str = "train", with_results: bool = True) -> list[dict]:
    """n lines, cycling through the functions; "train" and "test" phrasings never overlap."""
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    rng = random.Random(f"{split}:{seed}")
    names = [t["function"]["name"] for t in TOOLS]
    out = []
    for i in range(n):
        name = names[i % len(names)]
        pool = ASKS[name][:-TEST_PHRASINGS] if split == "train" else ASKS[name][-TEST_PHRASINGS:]
        args = _arguments(name, rng)
        ask = ask_text(name, args, rng.choice(pool), rng)
        result = _result_and_answer(name, args, rng) if with_results and i % 2 else None
        out.append(example(name, args, ask, f"call_{split}{seed}_{i}", result))
    return out


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


if __name__ == "__main__":
    argv = sys.argv[1:]
    split = "test" if "--split" in argv and argv[argv.index("--split") + 1] == "test" else "train"
    argv = [a for a in argv if a not in ("--split", "test", "train")]
    if not argv:
        sys.exit("usage: python -m openft.data.tool_examples OUT.jsonl [N] [--split train|test]")
    rows = examples(int(argv[1]) if len(argv) > 1 else 100, split=split)
    print(f"wrote {len(rows)} lines to {write_jsonl(argv[0], rows)}")
