"""openft.eval: measuring models, independent of HTTP, jobs and the serving engine.

- `classification`: accuracy, precision/recall/F1 (per class, macro, weighted), F-beta, confusion
  matrix, binary AUROC/AUPRC from label probabilities (scikit-learn computes every number).
- `generation`: exact match, BLEU (sacrebleu), ROUGE-1/2/L (rouge-score), fuzzy match.
- `templates`: OpenAI's `{{item.field}}` / `{{sample.output_text}}` templates.
- `graders`: OpenAI's grader schema (string_check, text_similarity, label_model, score_model,
  multi; python only when enabled): validation with the param named, and grading.
- `label_scoring`: labels of a training file and how label scores become predictions and the
  legacy `classification/*` columns (the trainer scores the labels: openft.train.label_scores).
- `compare`: run the same items on several models through any OpenAI-compatible API.

The library never opens a database or a socket of its own except `compare`, which is handed a
client per model; LLM judges are callables the caller supplies.
"""
