"""Free-text metrics per item and aggregated: exact match, BLEU (sacrebleu), ROUGE-1/2/L
(rouge-score), fuzzy match (rapidfuzz), plus the other similarities OpenAI's text_similarity
grader names where a library computes them (GLEU and METEOR from nltk, ROUGE-3..5).

Scores are in [0, 1] (BLEU divided by 100). Knows nothing about models or graders.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


def exact_match(pred: str, ref: str) -> float:
    return 1.0 if pred.strip() == ref.strip() else 0.0


def fuzzy_match(pred: str, ref: str) -> float:
    """rapidfuzz's normalised Indel similarity (what OpenAI's fuzzy_match reports), in [0, 1]."""
    from rapidfuzz import fuzz

    return fuzz.ratio(pred, ref) / 100.0


def bleu(pred: str, ref: str) -> float:
    """Sentence BLEU (sacrebleu, its default smoothing 'exp'), in [0, 1]."""
    import sacrebleu

    return sacrebleu.sentence_bleu(pred, [ref]).score / 100.0


@lru_cache(maxsize=8)
def _scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def rouge(pred: str, ref: str, kind: str = "rougeL") -> float:
    """ROUGE F-measure (rouge-score; kind rouge1..rouge9 or rougeL), in [0, 1]."""
    return float(_scorer(kind).score(ref, pred)[kind].fmeasure)


def gleu(pred: str, ref: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([ref.split()], pred.split()))


def meteor(pred: str, ref: str) -> float:
    """METEOR (nltk). Needs the WordNet corpus; without it, a clear error says so."""
    from nltk.translate.meteor_score import meteor_score

    try:
        return float(meteor_score([ref.split()], pred.split()))
    except LookupError as e:
        raise RuntimeError("METEOR needs nltk's WordNet data (python -m nltk.downloader wordnet).") from e


SIMILARITY = {
    "fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor,
    "rouge_1": lambda p, r: rouge(p, r, "rouge1"), "rouge_2": lambda p, r: rouge(p, r, "rouge2"),
    "rouge_3": lambda p, r: rouge(p, r, "rouge3"), "rouge_4": lambda p, r: rouge(p, r, "rouge4"),
    "rouge_5": lambda p, r: rouge(p, r, "rouge5"), "rouge_l": lambda p, r: rouge(p, r, "rougeL"),
}
# `cosine` compares embeddings; openft serves no embedding model, so it is refused (400).
UNSUPPORTED_SIMILARITY = {"cosine": "cosine similarity needs an embeddings model, which openft does not serve"}


def meteor_available() -> bool:
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return True
    except Exception:
        return False


def generation_metrics(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """{"per_item": [{exact_match, bleu, rouge1, rouge2, rougeL, fuzzy}], aggregates...}.
    Aggregates are means of the per-item scores, except `corpus_bleu` (sacrebleu's corpus BLEU)."""
    import sacrebleu

    per = []
    for p, r in zip(preds, refs, strict=True):
        per.append({"exact_match": exact_match(p, r), "bleu": bleu(p, r), "rouge1": rouge(p, r, "rouge1"),
                    "rouge2": rouge(p, r, "rouge2"), "rougeL": rouge(p, r, "rougeL"), "fuzzy": fuzzy_match(p, r)})
    n = len(per)
    out = {"n": n, "per_item": per}
    for key in ("exact_match", "bleu", "rouge1", "rouge2", "rougeL", "fuzzy"):
        out[key] = sum(x[key] for x in per) / n if n else None
    out["corpus_bleu"] = sacrebleu.corpus_bleu(list(preds), [list(refs)]).score / 100.0 if n else None
    return out
