"""The data toolkit: read, check, convert, split and synthesize fine-tuning datasets.

Modules: `formats` (the record formats and their checks), `reader` (streaming JSONL and
tables), `validate` (`validate_file` -> ValidationReport, used by the job validator and the
CLI), `tokens` (fast token counts with the base model's tokenizer), `estimate` (auto epochs,
tokens, time), `convert`, `split` (split and overlap), `synthesize` (Q&A from documents).

Nothing is imported here, so `import openft.data` stays cheap; import the module you need.
Knows nothing about HTTP, jobs or the CLI.
"""
