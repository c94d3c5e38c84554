"""Move fine-tuning jobs and their files from a source that speaks OpenAI's API to openft.

`Migration(source, target, ...)` holds two `openai` SDK clients. `source_jobs()` lists the
source's jobs (succeeded ones unless told otherwise, oldest first, or the ids asked for);
`migrate(plan)` brings one job over: each of its files is streamed from the source's Files API
into a temporary file (never whole in memory), checked against the size the source gives,
uploaded to the target, and the job is created there with the plan's method, hyperparameters,
suffix, seed and metadata. `dry_run=True` does everything but upload and create, and measures
the files (`Estimator`) for the plan.

Nothing is migrated twice, so an interrupted run resumes where it stopped:
- a job whose target twin exists (a target job with `metadata.migrated_from` = the source job id,
  found with the `metadata[migrated_from]=` list filter) is skipped;
- a file is uploaded as `migrated-<source file id>-<its name>`; a target file of that name and
  size is reused, by a later job or by the re-run of a job interrupted before its job was created.

Knows the `openai` SDK; nothing about the CLI or the server's internals.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openft.migrate.faults import MigrateError, describe, is_fatal, server_message
from openft.migrate.plan import MIGRATED_FROM, JobPlan
from openft.vocab import SUPERVISED

FILE_PREFIX = "migrated-"
CHUNK = 1 << 20  # bytes per read when streaming a file down


@dataclass
class Outcome:
    """What happened to one source job: migrated, already (migrated earlier), planned (dry run),
    skipped (cannot be migrated) or failed (can be retried by running again)."""

    source_id: str
    status: str
    line: str
    target_job: str | None = None


def target_filename(source_file_id: str, filename: str | None) -> str:
    name = os.path.basename(filename or "") or "file.jsonl"
    if not name.lower().endswith(".jsonl"):
        name += ".jsonl"   # openft takes fine-tune files named .jsonl only
    return f"{FILE_PREFIX}{source_file_id}-{name}"


def download(client, file_id: str, dest: Path) -> int:
    """Stream a file's content into `dest`; returns its size in bytes."""
    size = 0
    with client.files.with_streaming_response.content(file_id) as resp, open(dest, "wb") as out:
        for chunk in resp.iter_bytes(CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


class Migration:
    """One migration run: source and target clients, what the target already has, the outcomes."""

    def __init__(self, source, target, *, source_url: str, target_url: str,
                 echo: Callable[[str], None] = print, estimator: Any = None):
        self.source, self.target = source, target
        self.source_url, self.target_url = source_url, target_url
        self.echo, self.estimator = echo, estimator
        self._target_files: dict[tuple[str, int], str] | None = None   # (filename, bytes) -> target file id
        self._method_refused: dict[str, str | None] = {SUPERVISED: None}
        self._tmp = tempfile.TemporaryDirectory(prefix="openft-migrate-")

    def close(self) -> None:
        self._tmp.cleanup()

    # ------------------------------------------------------------------ listing

    def _fatal(self, exc: BaseException, side: str) -> MigrateError:
        return MigrateError(describe(exc, side, self.source_url if side == "source" else self.target_url))

    def source_jobs(self, job_ids: list[str] | None = None, *, all_statuses: bool = False
                    ) -> Iterator[Any | Outcome]:
        """The source's jobs to migrate, oldest first (an Outcome for an asked-for id it lacks)."""
        import openai

        if job_ids:
            for jid in dict.fromkeys(job_ids):
                try:
                    yield self.source.fine_tuning.jobs.retrieve(jid)
                except openai.NotFoundError:
                    yield Outcome(jid, "failed", f"{jid}: no such fine-tuning job at the source ({self.source_url})")
                except Exception as e:  # noqa: BLE001 - one line, then the next job (or stop when fatal)
                    if is_fatal(e):
                        raise self._fatal(e, "source") from None
                    yield Outcome(jid, "failed", f"{jid}: {describe(e, 'source', self.source_url)}")
            return
        try:
            jobs = list(self.source.fine_tuning.jobs.list(limit=100))   # iterating follows every page
        except Exception as e:  # noqa: BLE001 - nothing can be migrated without the list
            raise self._fatal(e, "source") from None
        for job in reversed(jobs):
            if all_statuses or job.status == "succeeded":
                yield job

    # ------------------------------------------------------------------ the target's side

    def existing_job(self, source_id: str):
        """The target job migrated from `source_id` earlier, or None."""
        try:
            page = self.target.fine_tuning.jobs.list(limit=1, metadata={MIGRATED_FROM: source_id})
        except Exception as e:  # noqa: BLE001 - without this check the job is not migrated (never twice)
            raise _on(e, "target")
        return page.data[0] if page.data else None

    def target_files(self) -> dict[tuple[str, int], str]:
        if self._target_files is None:
            found: dict[tuple[str, int], str] = {}
            try:
                for f in self.target.files.list(purpose="fine-tune"):
                    if f.filename.startswith(FILE_PREFIX) and f.status != "error":
                        found.setdefault((f.filename, f.bytes), f.id)
            except Exception as e:  # noqa: BLE001
                raise _on(e, "target")
            self._target_files = found
        return self._target_files

    def method_refused(self, method: str, model: str) -> str | None:
        """Why the target refuses `method` (its own message), or None when it takes it. Asked once
        per method with a job that cannot be created (its file does not exist): the target checks
        the method first, so no file is uploaded for a job it would refuse."""
        import openai

        if method not in self._method_refused:
            try:
                self.target.fine_tuning.jobs.create(model=model, training_file="file-openft-migrate-probe",
                                                    method={"type": method, method: {"hyperparameters": {}}})
                refused = None   # (cannot happen: the file does not exist)
            except openai.BadRequestError as e:
                body = e.body if isinstance(e.body, dict) else {}
                refused = body.get("message") or e.message if body.get("param") == "method.type" else None
            except Exception as e:  # noqa: BLE001
                raise _on(e, "target")
            self._method_refused[method] = refused
        return self._method_refused[method]

    # ------------------------------------------------------------------ one job

    def migrate(self, plan: JobPlan, *, dry_run: bool = False) -> Outcome:
        sid = plan.source_id
        if plan.skip:
            return Outcome(sid, "skipped", f"{sid}: skipped: {plan.skip}")
        try:
            twin = self.existing_job(sid)
            if twin is not None:
                return Outcome(sid, "already", f"{sid}: already migrated as {twin.id} ({twin.status})", twin.id)
            refused = self.method_refused(plan.method, plan.target_model)
            if refused:
                return Outcome(sid, "skipped", f"{sid}: skipped: openft does not support {plan.method} fine-tuning "
                                               f"(the target says: {refused})")
            files = {role: self._bring_file(plan, role, fid, dry_run) for role, fid in plan.files()}
            if dry_run:
                return Outcome(sid, "planned", f"{sid}: would create a {plan.method} job on {plan.target_model}")
            kw = {k: v for k, v in (("validation_file", files.get("validation")), ("suffix", plan.suffix),
                                    ("seed", plan.seed)) if v is not None}
            job = self._create(plan, files, kw)
        except JobFault as e:
            return Outcome(sid, "failed", f"{sid}: {e}")
        except Exception as e:  # noqa: BLE001 - one line, then the next job
            side = "target" if getattr(e, "_side", "source") == "target" else "source"
            if is_fatal(e):
                raise e if isinstance(e, MigrateError) else self._fatal(e, side) from None
            return Outcome(sid, "failed", f"{sid}: {describe(e, side, getattr(self, side + '_url'))}")
        return Outcome(sid, "migrated", f"{sid}: migrated as {job.id} ({plan.method} on {plan.target_model})", job.id)

    def _create(self, plan: JobPlan, files: dict, kw: dict):
        """Create the target job, once: never retried blind (openft keeps no idempotency keys, so a
        retry after a lost answer would make a second job); after a failure the target is asked
        whether the job was made after all."""
        try:
            return self.target.with_options(max_retries=0).fine_tuning.jobs.create(
                model=plan.target_model, training_file=files["training"], method=plan.method_object(),
                metadata=plan.metadata, **kw)
        except Exception as e:  # noqa: BLE001
            import openai

            if isinstance(e, (openai.APIConnectionError, openai.InternalServerError)):
                try:
                    twin = self.existing_job(plan.source_id)
                except Exception:  # noqa: BLE001 - the first failure is the one to report
                    twin = None
                if twin is not None:
                    return twin
            raise _on(e, "target")

    def _bring_file(self, plan: JobPlan, role: str, fid: str, dry_run: bool) -> str | None:
        """The target file id for source file `fid` (uploaded now unless it is there already)."""
        import openai

        try:
            meta = self.source.files.retrieve(fid)
        except openai.NotFoundError:
            raise JobFault(f"its {role} file {fid} no longer exists at the source (deleted?); "
                            f"`openft migrate record` can rebuild training data from the model") from None
        except Exception as e:  # noqa: BLE001
            raise _on(e, "source")
        name = target_filename(fid, meta.filename)
        have = self.target_files().get((name, meta.bytes))
        if have and not dry_run:
            self.echo(f"  {role} file {fid}: already on the target as {have}")
            return have
        if have and dry_run and self.estimator is None:
            return have
        path = Path(self._tmp.name) / name
        try:
            try:
                size = download(self.source, fid, path)
            except openai.NotFoundError:
                raise JobFault(f"its {role} file {fid} no longer has content at the source (deleted?)") from None
            except (openai.BadRequestError, openai.PermissionDeniedError) as e:
                # OpenAI has refused downloads of purpose "fine-tune" files at times
                raise JobFault(f"the source refuses to hand out its {role} file {fid} ({e.status_code}: {server_message(e)}); "
                               "upload your own copy and create the job with `openft jobs create`, or record the "
                               "model's answers with `openft migrate record`") from None
            except Exception as e:  # noqa: BLE001
                raise _on(e, "source")
            if meta.bytes is not None and size != meta.bytes:
                raise JobFault(f"the {role} file {fid} came down as {size} bytes, the source says {meta.bytes} "
                                   "(interrupted download); run again")
            if dry_run:
                if self.estimator is not None:
                    self.estimator.measure(plan, role, fid, meta, path)
                return have
            try:
                with open(path, "rb") as fh:
                    up = self.target.files.create(file=(name, fh), purpose="fine-tune")
            except Exception as e:  # noqa: BLE001
                raise _on(e, "target")
        finally:
            path.unlink(missing_ok=True)
        self.target_files()[(name, meta.bytes)] = up.id
        self.echo(f"  {role} file {fid} ({meta.bytes:,} bytes): uploaded as {up.id}")
        return up.id


class JobFault(Exception):
    """What keeps one job from being migrated (its file is gone at the source...), in words."""


def _on(exc: BaseException, side: str) -> BaseException:
    """Tag an exception with the side that raised it (for its one line)."""
    exc._side = side
    return exc
