"""Webhook test fixtures (receiver: tests/support/receiver.py): a receiver, a live server that may
deliver to it (loopback allowed, fast retries) and one with the default rules."""

from __future__ import annotations

import pytest

from tests.support.receiver import DELIVERING_ENV, Receiver
from tests.support.servers import ServerSpec, running


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory, model_cache):
    """API + embedded worker; webhooks may go to loopback (the receiver); retries after 0.2 s, 0.4 s."""
    with running(ServerSpec(env=DELIVERING_ENV).server(tmp_path_factory.mktemp("hooks") / "data", model_cache)) as s:
        yield s


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, model_cache):
    """The default rules (no private targets), no worker."""
    with running(ServerSpec(worker=False).server(tmp_path_factory.mktemp("strict") / "data", model_cache)) as s:
        yield s
