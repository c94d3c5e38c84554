"""Migrate from OpenAI (or any server that speaks its API) to openft: jobs, files and behaviour.

- `plan`: what one source job becomes on openft (base model mapping, method, hyperparameters,
  suffix, seed, metadata with `migrated_from`); pure.
- `transfer`: `Migration`, which lists the source's jobs, streams their files down and up, and
  creates the jobs, never twice.
- `measure`: the dry run's examples, tokens and time on this machine (the data toolkit's
  validation, the pace store, the probe).
- `record`: ask a source model a list of prompts and write its answers as a chat training file.
- `faults`: one readable line per failure, naming the side (source or target).

Knows the `openai` SDK and openft's data toolkit and pace store; nothing about the CLI.
"""
