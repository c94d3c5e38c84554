"""`openft.api.server.run` as a process: the admin key generated at first start (printed, saved
0600, kept across restarts), clean exit on SIGTERM, and jobs left in `validating_files` by a
previous server validated again at start."""

from __future__ import annotations

import os
import re
import stat

import openai
import pytest

from tests.support.data import chat_jsonl, upload
from tests.support.servers import ApiServer
from tests.support.wait import wait_job


@pytest.mark.slow
def test_first_start_key_restart_and_revalidation(tmp_path, model_cache):
    data = tmp_path / "data"
    env = {"OPENFT_API_KEY": "", "OPENFT_EMBEDDED_WORKER": "false"}
    server = ApiServer(data, model_cache, env=env).start()
    try:
        key_file = data / "admin_key"
        key = key_file.read_text().strip()
        assert key.startswith("sk-openft-") and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert key in server.log.read_text()  # printed for the user
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="sk-openft-test-admin").models.list()
        api = server.client(api_key=key)
        job = api.fine_tuning.jobs.create(model="openft-tiny", training_file=upload(api, chat_jsonl(12)).id)
        wait_job(api, job.id, {"queued"})
    finally:
        assert server.stop() == 0  # SIGTERM: a clean exit

    from openft.store.db import jobs

    db = server.db()
    with db.begin() as conn:  # as if the server had died while validating
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(status="validating_files"))
    db.dispose()
    log_before = server.log.read_text()
    again = ApiServer(data, model_cache, env=env).start()
    try:
        api = again.client(api_key=key)  # the same key still works
        assert wait_job(api, job.id, {"queued"}).status == "queued"
        new_output = again.log.read_text()[len(log_before):] if again.log == server.log else again.log.read_text()
        assert not re.search(r"generated an admin API key", new_output)
    finally:
        assert again.stop() == 0
