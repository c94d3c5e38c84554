"""The test toolkit every test imports from (`from tests.support.wait import wait_until`).

- `wait`: `wait_until(predicate, timeout, what=...)`, the one polling loop, and the waits built on
  it (`wait_job`, `wait_eval_run`).
- `servers`: `LiveServer` (a real `openft` process on a free port), `ServerSpec` (how a test
  module's `server` fixture is started), `in_process_server` (`ServerThread` in this process).
- `data`: the datasets, each made once: chat rows / JSONL / files, prompt-completion rows,
  preference pairs, uploads, the shared reference data folder.
- `jobs`: stored files and job rows written straight into the database (the job-system tests).
- `receiver`: a real HTTP(S) webhook receiver that records what it is sent, attempt by attempt.
- `serving`: random PEFT adapters and running generation requests to the end.
- `web`: signing in to the dashboard in a browser page, dropping files, screenshots, a short job.
- `cli`: the `openft` CLI run in-process (`invoke`, `migrate`).
- `models`: base models made from the tiny one (a tool-calling template).
- `proxy`, `ollama_template`: an HTTP proxy with fault injection (migration tests), Ollama's
  Modelfile template language (the GGUF export tests).

Knows openft's public surfaces (the SDK, the database tables); holds no test of its own.
"""
