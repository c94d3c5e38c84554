"""OpenAI's graders: `string_check`, `text_similarity`, `label_model`, `score_model`, `multi`,
and `python` (refused unless the operator enables it).

`check_grader(spec, item_schema, sample_allowed, param, allow_python, model_exists)` validates a
grader dict at eval creation and raises InvalidRequest naming the exact param
(`testing_criteria[1].evaluation_metric`). `grade(spec, item, sample, judge)` (async) returns
OpenAI's result object `{"name", "type", "score", "passed", "sample"}`; it raises
templates.MissingField for an item without a field the grader needs, and UnreadableAnswer for a
score_model judge whose answer holds no number (the caller errors that sample). LLM judges (label_model,
score_model) call `judge(model, messages, sampling_params) -> (text, usage)`, supplied by the
caller, so this module knows nothing about engines or HTTP.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable

from openft.errors import InvalidRequest
from openft.eval import generation, templates

GRADER_TYPES = ("string_check", "text_similarity", "label_model", "score_model", "multi", "python")
STRING_OPS = ("eq", "ne", "like", "ilike")
Judge = Callable[[str, list[dict], dict], Awaitable[tuple[str, dict]]]


def _need(spec: dict, key: str, kind, param: str):
    if key not in spec:
        raise InvalidRequest(f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}",
                             code="missing_required_parameter")
    value = spec[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidRequest(f"Invalid type for '{param}.{key}'.", param=f"{param}.{key}", code="invalid_type")
    return value


def _message_texts(messages: list, param: str) -> list[tuple[str, str]]:
    """[(param, template text)] of a grader's `input` messages (strings or text content parts)."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidRequest("Each input message needs a role and a content.", param=f"{param}.input[{i}]")
        content = m["content"]
        if isinstance(content, dict):
            if content.get("type") not in ("input_text", "output_text"):
                raise InvalidRequest(f"Content type {content.get('type')!r} is not supported: openft serves text "
                                     "models.", param=f"{param}.input[{i}].content.type")
            content = content.get("text", "")
        if not isinstance(content, str):
            raise InvalidRequest("Invalid type for content.", param=f"{param}.input[{i}].content", code="invalid_type")
        out.append((f"{param}.input[{i}].content", content))
    return out


def check_grader(spec, *, item_schema: dict | None, sample_allowed: bool, param: str, allow_python: bool = False,
                 model_exists: Callable[[str], bool] | None = None) -> None:
    if not isinstance(spec, dict):
        raise InvalidRequest("Each testing criterion must be an object.", param=param, code="invalid_type")
    kind = spec.get("type")
    if kind not in GRADER_TYPES:
        raise InvalidRequest(f"Unknown grader type {kind!r}; one of {', '.join(GRADER_TYPES)}.", param=f"{param}.type",
                             code="invalid_value")
    _need(spec, "name", str, param)

    def refs(text: str, where: str) -> None:
        templates.check_refs(text, item_schema, sample_allowed=sample_allowed, param=where)

    if kind == "string_check":
        refs(_need(spec, "input", str, param), f"{param}.input")
        refs(_need(spec, "reference", str, param), f"{param}.reference")
        if _need(spec, "operation", str, param) not in STRING_OPS:
            raise InvalidRequest(f"operation must be one of {', '.join(STRING_OPS)}.", param=f"{param}.operation",
                                 code="invalid_value")
    elif kind == "text_similarity":
        refs(_need(spec, "input", str, param), f"{param}.input")
        refs(_need(spec, "reference", str, param), f"{param}.reference")
        metric = _need(spec, "evaluation_metric", str, param)
        if metric in generation.UNSUPPORTED_SIMILARITY:
            raise InvalidRequest(f"evaluation_metric {metric!r} is not supported by openft: "
                                 f"{generation.UNSUPPORTED_SIMILARITY[metric]}.", param=f"{param}.evaluation_metric",
                                 code="unsupported_value")
        if metric not in generation.SIMILARITY:
            raise InvalidRequest(f"Unknown evaluation_metric {metric!r}; one of "
                                 f"{', '.join(generation.SIMILARITY)}.", param=f"{param}.evaluation_metric",
                                 code="invalid_value")
        if metric == "meteor" and not generation.meteor_available():
            raise InvalidRequest("evaluation_metric 'meteor' needs nltk's WordNet data, which this server lacks "
                                 "(python -m nltk.downloader wordnet).", param=f"{param}.evaluation_metric",
                                 code="unsupported_value")
        if "pass_threshold" in spec:
            _need(spec, "pass_threshold", (int, float), param)
    elif kind in ("label_model", "score_model"):
        model = _need(spec, "model", str, param)
        for where, text in _message_texts(_need(spec, "input", list, param), param):
            refs(text, where)
        if kind == "label_model":
            labels = _need(spec, "labels", list, param)
            passing = _need(spec, "passing_labels", list, param)
            if not labels or not all(isinstance(x, str) for x in labels):
                raise InvalidRequest("labels must be a non-empty list of strings.", param=f"{param}.labels")
            bad = [x for x in passing if x not in labels]
            if bad:
                raise InvalidRequest(f"passing_labels {bad} are not among labels.", param=f"{param}.passing_labels")
        else:
            rng = spec.get("range")
            if rng is not None and (not isinstance(rng, list) or len(rng) != 2 or not rng[0] < rng[1]):
                raise InvalidRequest("range must be [min, max] with min < max.", param=f"{param}.range")
        if model_exists is not None and not model_exists(model):
            raise InvalidRequest(f"The judge model `{model}` does not exist or you do not have access to it.",
                                 param=f"{param}.model", code="model_not_found")
    elif kind == "multi":
        subs = _need(spec, "graders", dict, param)
        formula = _need(spec, "calculate_output", str, param)
        if "type" in subs:  # one grader, as the SDK's type has it: keyed by its name
            subs = {subs.get("name", "grader"): subs}
        for name, sub in subs.items():
            check_grader(sub, item_schema=item_schema, sample_allowed=sample_allowed, param=f"{param}.graders.{name}",
                         allow_python=allow_python, model_exists=model_exists)
        try:
            _formula(formula, dict.fromkeys(subs, 0.5))
        except Exception as e:
            raise InvalidRequest(f"calculate_output is not a formula over the graders' names: {e}",
                                 param=f"{param}.calculate_output") from None
    elif kind == "python":
        if not allow_python:
            raise InvalidRequest("The python grader runs user code and is disabled on this server; an operator can "
                                 "enable it with OPENFT_EVAL_PYTHON_GRADER=true.", param=f"{param}.type",
                                 code="unsupported_value")
        source = _need(spec, "source", str, param)
        try:
            compile(source, "<grader>", "exec")
        except SyntaxError as e:
            raise InvalidRequest(f"The python grader's source does not compile: {e}", param=f"{param}.source") from None


def python_graders(criteria: list) -> list[str]:
    """The names of the python graders among `criteria` (an eval's testing_criteria), multi's included."""
    out: list[str] = []
    for spec in criteria or []:
        if not isinstance(spec, dict):
            continue
        if spec.get("type") == "python":
            out.append(str(spec.get("name") or "python"))
        elif spec.get("type") == "multi" and isinstance(spec.get("graders"), dict):
            subs = spec["graders"]
            out += python_graders([subs] if "type" in subs else list(subs.values()))
    return out


def check_python_allowed(criteria: list, allow_python: bool) -> None:
    """Refuse to run an eval whose python grader was saved while the operator allowed it and is
    no longer allowed (OPENFT_EVAL_PYTHON_GRADER is checked when a run starts, not only at creation)."""
    names = python_graders(criteria)
    if names and not allow_python:
        raise InvalidRequest(f"This eval's python grader ({', '.join(names)}) runs user code, which is disabled on "
                             "this server now (OPENFT_EVAL_PYTHON_GRADER is off); the run was not started.",
                             param="testing_criteria", code="python_grader_disabled")


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"min": min, "max": max, "abs": abs, "sqrt": lambda x: x ** 0.5, "log": __import__("math").log,
          "exp": __import__("math").exp, "floor": __import__("math").floor, "ceil": __import__("math").ceil}


def _formula(text: str, names: dict[str, float]) -> float:
    """A safe arithmetic evaluator: numbers, grader names, + - * / **, min/max/abs/sqrt/log/exp."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name {node.id!r}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return float(_FUNCS[node.func.id](*[ev(a) for a in node.args]))
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    return ev(ast.parse(text, mode="eval"))


def _result(spec: dict, score: float, passed: bool, sample: dict | None = None) -> dict:
    return {"name": spec["name"], "type": spec["type"], "score": float(score), "passed": bool(passed),
            "sample": sample}


def _judge_messages(spec: dict, item: dict, sample: dict | None) -> list[dict]:
    out = []
    for m in spec["input"]:
        content = m["content"]
        text = content.get("text", "") if isinstance(content, dict) else content
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": templates.render(text, item, sample)})
    return out


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label a judge answered: the whole answer, else the first label named in it."""
    answer = text.strip().strip(".\"'`").strip()
    for lab in labels:
        if answer.lower() == lab.lower():
            return lab
    hits = [(m.start(), lab) for lab in labels for m in [re.search(rf"\b{re.escape(lab)}\b", text, re.I)] if m]
    return min(hits)[1] if hits else None


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class UnreadableAnswer(ValueError):
    """A judge answered something that holds no score: the sample is errored, not graded (a score
    at the range's bottom would count as a real `failed`)."""

    code = "unreadable_judge_answer"


def read_score(text: str, lo: float, hi: float, model: str) -> float:
    """The first number in a score_model judge's answer, clamped to [lo, hi]; UnreadableAnswer if none."""
    m = _NUMBER.search(text)
    if m is None:
        raise UnreadableAnswer(f"The judge model {model} answered {text[:200]!r}, which holds no score "
                               f"(a number from {lo} to {hi}); the sample was not graded.")
    return min(max(float(m.group()), lo), hi)


async def grade(spec: dict, item: dict, sample: dict | None, judge: Judge | None = None,
                usage: Callable[[str, dict], None] | None = None) -> dict:
    kind = spec["type"]
    if kind == "string_check":
        a = templates.render(spec["input"], item, sample)
        b = templates.render(spec["reference"], item, sample)
        op = spec["operation"]
        ok = {"eq": a == b, "ne": a != b, "like": b in a, "ilike": b.lower() in a.lower()}[op]
        return _result(spec, 1.0 if ok else 0.0, ok)
    if kind == "text_similarity":
        a = templates.render(spec["input"], item, sample)
        b = templates.render(spec["reference"], item, sample)
        score = generation.SIMILARITY[spec["evaluation_metric"]](a, b)
        threshold = spec.get("pass_threshold", 1.0)
        return _result(spec, score, score >= threshold)
    if kind in ("label_model", "score_model"):
        if judge is None:
            raise RuntimeError("this grader needs a judge model and none was supplied")
        messages = _judge_messages(spec, item, sample)
        if kind == "label_model":
            messages.append({"role": "system", "content": "Answer with exactly one of these labels and nothing "
                                                          "else: " + ", ".join(spec["labels"]) + "."})
            text, used = await judge(spec["model"], messages, {"temperature": 0.0, "max_completion_tokens": 16})
            label = parse_label(text, spec["labels"])
            passed = label is not None and label in spec["passing_labels"]
            if usage:
                usage(spec["model"], used)
            return _result(spec, 1.0 if passed else 0.0, passed, {"output": [{"role": "assistant", "content": text}],
                                                                  "label": label})
        lo, hi = spec.get("range") or [0.0, 1.0]
        messages.append({"role": "system", "content": f"Answer with only a number from {lo} to {hi}."})
        params = {"temperature": 0.0, "max_completion_tokens": 16, **(spec.get("sampling_params") or {})}
        text, used = await judge(spec["model"], messages, params)
        if usage:
            usage(spec["model"], used)
        score = read_score(text, lo, hi, spec["model"])
        threshold = spec.get("pass_threshold")
        passed = score >= (threshold if threshold is not None else (lo + hi) / 2)
        return _result(spec, score, passed, {"output": [{"role": "assistant", "content": text}]})
    if kind == "multi":
        subs = spec["graders"]
        if "type" in subs:
            subs = {subs.get("name", "grader"): subs}
        scores = {name: (await grade(sub, item, sample, judge, usage))["score"] for name, sub in subs.items()}
        score = _formula(spec["calculate_output"], scores)
        threshold = spec.get("pass_threshold")
        return _result(spec, score, score >= (threshold if threshold is not None else 1.0), {"scores": scores})
    if kind == "python":
        return _result(spec, *_run_python(spec, item, sample))
    raise ValueError(f"unknown grader type {kind!r}")


_PY_RUNNER = """
import json, sys
data = json.loads(sys.stdin.read())
ns = {}
exec(data["source"], ns)
print(json.dumps(float(ns["grade"](data["sample"], data["item"]))))
"""


def _run_python(spec: dict, item: dict, sample: dict | None, timeout: float = 30.0) -> tuple[float, bool]:
    """OpenAI's python grader: `grade(sample, item) -> float`, run in a separate interpreter
    (isolated mode, a time limit). Only reachable when the operator enabled it."""
    done = subprocess.run([sys.executable, "-I", "-c", _PY_RUNNER], capture_output=True, text=True, timeout=timeout,
                          input=json.dumps({"source": spec["source"], "item": item, "sample": sample or {}}))
    if done.returncode != 0:
        raise RuntimeError(f"python grader failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    score = float(json.loads(done.stdout.strip().splitlines()[-1]))
    threshold = spec.get("pass_threshold")
    return score, score >= (threshold if threshold is not None else 1.0)
