"""openft.eval against hand-computed cases and scikit-learn on the same predictions."""

from __future__ import annotations

import asyncio
import math

import pytest
from sklearn import metrics as skm

from openft.errors import InvalidRequest
from openft.eval import classification, generation, graders, templates


def grade(spec, item, sample=None, judge=None):
    return asyncio.run(graders.grade(spec, item, sample, judge))


SC = {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.ref}}"}


@pytest.mark.parametrize("op,out,ref,passed", [
    ("eq", "Paris", "Paris", True), ("eq", "paris", "Paris", False), ("ne", "Rome", "Paris", True),
    ("ne", "Paris", "Paris", False), ("like", "It is Paris.", "Paris", True), ("like", "it is paris", "Paris", False),
    ("ilike", "it is PARIS", "paris", True), ("ilike", "Rome", "paris", False)])
def test_string_check(op, out, ref, passed):
    r = grade({**SC, "operation": op}, {"ref": ref}, {"output_text": out})
    assert r == {"name": "s", "type": "string_check", "score": float(passed), "passed": passed, "sample": None}


def test_text_similarity_metrics_by_hand():
    ts = {"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "{{item.ref}}"}
    item, sample = {"ref": "the cat sat"}, {"output_text": "the cat ran"}
    # ROUGE-1: 2 of 3 unigrams shared both ways -> P = R = F = 2/3; ROUGE-2: 1 of 2 bigrams -> 1/2
    assert grade({**ts, "evaluation_metric": "rouge_1"}, item, sample)["score"] == pytest.approx(2 / 3)
    assert grade({**ts, "evaluation_metric": "rouge_2"}, item, sample)["score"] == pytest.approx(1 / 2)
    assert grade({**ts, "evaluation_metric": "rouge_l"}, item, sample)["score"] == pytest.approx(2 / 3)
    # Indel similarity: "abc" vs "abd": 2 * 2 common / 6 chars = 2/3
    r = grade({**ts, "evaluation_metric": "fuzzy_match", "pass_threshold": 0.7}, {"ref": "abd"}, {"output_text": "abc"})
    assert r["score"] == pytest.approx(2 / 3) and r["passed"] is False
    same = {"output_text": "the cat sat"}
    assert grade({**ts, "evaluation_metric": "bleu"}, item, same)["score"] == pytest.approx(1.0)
    # GLEU on identical 3-token text is 1, on disjoint text 0
    assert grade({**ts, "evaluation_metric": "gleu"}, item, {"output_text": "the cat sat"})["score"] == 1.0
    assert grade({**ts, "evaluation_metric": "gleu"}, item, {"output_text": "dog ran off"})["score"] == 0.0


def test_bleu_matches_sacrebleu_definition():
    import sacrebleu

    assert generation.bleu("a b c d e", "a b c d f") == pytest.approx(
        sacrebleu.sentence_bleu("a b c d e", ["a b c d f"]).score / 100)
    m = generation.generation_metrics(["yes", "no"], ["yes", "yes"])
    assert m["exact_match"] == 0.5 and m["per_item"][0]["rougeL"] == 1.0


def test_label_and_score_model_with_a_judge():
    seen = []

    async def judge(model, messages, params):
        seen.append((model, messages))
        return ("Positive." if "great" in messages[0]["content"] else "7 out of 10"), {"prompt_tokens": 3,
                                                                                      "completion_tokens": 1}

    lm = {"type": "label_model", "name": "l", "model": "ft:m", "labels": ["positive", "negative"],
          "passing_labels": ["positive"], "input": [{"role": "user", "content": "Review: {{item.text}}"}]}
    r = grade(lm, {"text": "great"}, None, judge)
    assert r["passed"] is True and r["score"] == 1.0 and r["sample"]["label"] == "positive"
    assert seen[0][0] == "ft:m" and seen[0][1][0]["content"] == "Review: great"
    sm = {"type": "score_model", "name": "s", "model": "m", "range": [0, 10], "pass_threshold": 8,
          "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    r = grade(sm, {}, {"output_text": "x"}, judge)
    assert r["score"] == 7.0 and r["passed"] is False


def test_a_score_model_answer_without_a_number_is_unreadable_not_graded():
    """Scored at the range's bottom it would count as a real fail; it is an error naming the answer."""
    async def judge(model, messages, params):
        return "I cannot rate this.", {"prompt_tokens": 3, "completion_tokens": 5}

    sm = {"type": "score_model", "name": "s", "model": "m", "range": [1, 5],
          "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    with pytest.raises(graders.UnreadableAnswer) as e:
        grade(sm, {}, {"output_text": "x"}, judge)
    assert "'I cannot rate this.'" in str(e.value) and "from 1 to 5" in str(e.value)


def test_multi_grader_formula():
    multi = {"type": "multi", "name": "m", "calculate_output": "0.5 * a + 0.5 * b", "graders": {
        "a": {**SC, "name": "a", "operation": "eq"}, "b": {**SC, "name": "b", "operation": "ilike"}}}
    r = grade(multi, {"ref": "Paris"}, {"output_text": "paris"})
    assert r["score"] == 0.5 and r["sample"]["scores"] == {"a": 0.0, "b": 1.0} and r["passed"] is False


def test_python_grader_refused_unless_enabled():
    spec = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 0.25\n"}
    with pytest.raises(InvalidRequest) as e:
        graders.check_grader(spec, item_schema={}, sample_allowed=True, param="testing_criteria[0]")
    assert e.value.param == "testing_criteria[0].type"
    graders.check_grader(spec, item_schema={}, sample_allowed=True, param="x", allow_python=True)
    assert grade({**spec, "pass_threshold": 0.2}, {}, {"output_text": ""})["score"] == 0.25


def test_templates_and_missing_fields():
    assert templates.render("{{item.a.b}}-{{sample.output_text}}", {"a": {"b": 1}}, {"output_text": "x"}) == "1-x"
    with pytest.raises(templates.MissingField):
        templates.render("{{item.nope}}", {}, None)
    with pytest.raises(InvalidRequest) as e:
        templates.check_refs("{{item.nope}}", {"properties": {"a": {}}}, sample_allowed=True, param="p")
    assert e.value.param == "p"


def test_classification_equals_scikit_learn():
    y_true = ["pos", "neg", "pos", "pos", "neg", "neg", "pos", "neg"]
    probs = [0.9, 0.2, 0.4, 0.8, 0.6, 0.1, 0.7, 0.45]
    dists = [{"pos": p, "neg": 1 - p} for p in probs]
    y_pred = ["pos" if p >= 0.5 else "neg" for p in probs]
    m = classification.classification_metrics(y_true, y_pred, probs=dists, positive="pos", betas=(1.0, 0.5))
    truth = [int(y == "pos") for y in y_true]
    hard = [int(y == "pos") for y in y_pred]
    assert m["accuracy"] == skm.accuracy_score(y_true, y_pred)
    assert m["precision"] == skm.precision_score(truth, hard) and m["recall"] == skm.recall_score(truth, hard)
    assert m["f1.0"] == skm.f1_score(truth, hard) and m["f0.5"] == skm.fbeta_score(truth, hard, beta=0.5)
    assert m["auroc"] == skm.roc_auc_score(truth, probs)
    assert m["auprc"] == skm.average_precision_score(truth, probs)
    assert m["macro_f1"] == skm.f1_score(y_true, y_pred, average="macro")
    assert m["weighted_precision"] == skm.precision_score(y_true, y_pred, average="weighted")
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y_true, y_pred, labels=["neg", "pos"]).tolist()
    cols = classification.legacy_columns(m)
    assert set(cols) == {"classification/accuracy", "classification/precision", "classification/recall",
                         "classification/auroc", "classification/auprc", "classification/f1.0",
                         "classification/f0.5"}


def test_auroc_comes_from_probabilities_not_hard_labels():
    # every prediction is "pos" at 0.5, but the probabilities still rank the positives first
    y_true = ["pos", "pos", "neg", "neg"]
    probs = [{"pos": 0.9, "neg": 0.1}, {"pos": 0.8, "neg": 0.2}, {"pos": 0.7, "neg": 0.3}, {"pos": 0.6, "neg": 0.4}]
    y_pred = ["pos"] * 4
    m = classification.classification_metrics(y_true, y_pred, probs=probs, positive="pos")
    hard_auroc = skm.roc_auc_score([1, 1, 0, 0], [1, 1, 1, 1])
    assert m["auroc"] == 1.0 and hard_auroc == 0.5


def test_label_probabilities_normalise_summed_logprobs():
    # a two-token label scores as the sum of its tokens' log-probs
    p = classification.label_probabilities({"yes": math.log(0.3), "no way": math.log(0.2) + math.log(0.5)})
    assert p["yes"] == pytest.approx(0.75) and p["no way"] == pytest.approx(0.25)


def test_multiclass_metrics():
    y_true, y_pred = ["a", "b", "c", "a"], ["a", "c", "c", "b"]
    m = classification.classification_metrics(y_true, y_pred, betas=(2.0,))
    assert "auroc" not in m and m["f2.0"] == skm.fbeta_score(y_true, y_pred, beta=2, average="macro")
    assert m["per_class"]["c"]["precision"] == 0.5


def test_migration_4_adds_the_eval_tables_to_an_old_database(v1_database):
    import sqlalchemy as sa

    from openft.store import db as dbmod

    engine, old = v1_database
    assert "evals" not in old
    assert 4 in dbmod.migrate(engine)
    have = set(sa.inspect(engine).get_table_names())
    assert {"evals", "eval_runs", "eval_output_items"} <= have
    assert dbmod.migrate(engine) == []  # recorded: not applied twice


def test_compare_helpers():
    from openft.eval import compare

    assert compare.detect_kind(["positive", "negative"] * 5) == "labels"
    assert compare.detect_kind([f"a long free text answer number {i}" for i in range(10)]) == "text"
    p = compare.Prediction("Pos", [{"token": " pos", "logprob": math.log(0.6)},
                                   {"token": "neg", "logprob": math.log(0.2)}, {"token": "x", "logprob": -1.0}])
    d = compare.label_distribution(p, ["negative", "positive"])
    assert d["positive"] == pytest.approx(0.75) and d["negative"] == pytest.approx(0.25)
    assert compare.label_of(compare.Prediction("I think negative."), ["negative", "positive"]) == "negative"
    assert compare.disagreements({"a": ["x", "y", "z"], "b": ["X ", "y", "w"]}) == [2]
    rows = [{"category": "stem", "answer": "A"}, {"category": "other", "answer": "B"}]
    base = [compare.Prediction("A"), compare.Prediction("B")]
    tuned = [compare.Prediction("C"), compare.Prediction("B")]
    rep = compare.forgetting_report(rows, base, tuned)
    assert rep["stem"]["drop"] == 1.0 and rep["other"]["drop"] == 0.0 and rep["all"]["drop"] == 0.5
    preds = [compare.Prediction("B"), compare.Prediction("no idea", [{"token": " C", "logprob": -0.1}]),
             compare.Prediction("hmm"), compare.Prediction("", error="APIConnectionError")]
    assert compare.answer_reading(preds, list("ABCD")) == {"n": 4, "failed": 1, "unreadable": 2, "from_logprobs": 1,
                                                           "counted_wrong": 1}
    mmlu = compare.mmlu_items()
    assert len(mmlu) == 160 and {r["category"] for r in mmlu} == {"stem", "humanities", "social_sciences", "other"}


def test_jsonl_items_with_a_byte_order_mark_and_located_bad_lines():
    """An evals file saved with a UTF-8 byte-order mark reads like one without (the data
    toolkit's rule); a bad line is named with the reader's message."""
    from openft.eval.datasource import parse_items

    text = '\ufeff{"q": "a"}\n\n{"item": {"q": "b"}, "sample": {"output_text": "x"}}\n'
    assert parse_items(text, "p") == [{"item": {"q": "a"}, "sample": None},
                                      {"item": {"q": "b"}, "sample": {"output_text": "x"}}]
    with pytest.raises(InvalidRequest) as e:
        parse_items('{"q": "a"}\n{"q": \n', "data_source.source")
    assert e.value.param == "data_source.source" and "line 2" in e.value.message and "invalid JSON" in e.value.message
