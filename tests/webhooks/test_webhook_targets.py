"""The delivery side in process: the address rules, a name that resolves to a private address
at delivery time (DNS rebinding) is refused and recorded, HTTPS to the checked address still
verifies the certificate against the name, signatures with a rotated secret
still honoured verify with the SDK, and the backoff doubles up to its cap."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import openai
import pytest
import sqlalchemy as sa

from openft.jobs import state
from openft.jobs.webhook_delivery import WebhookDeliverer, backoff
from openft.store.db import jobs, make_engine, migrate, webhook_attempts, webhook_deliveries, webhook_endpoints
from openft.webhooks import signing, targets
from tests.support.receiver import Receiver


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("240.0.0.1", False), ("::1", False), ("fe80::1", False),
    ("fc00::1", False), ("::ffff:127.0.0.1", False), ("2002:a00:1::", False), ("64:ff9b::7f00:1", False),
])
def test_is_public(address, public):
    assert targets.is_public(address) is public


@pytest.fixture
def db(settings):
    settings.ensure_dirs()
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    yield engine
    engine.dispose()


def _cancelled_job_with_endpoint(db, url: str, *, secret: str, previous: str | None = None) -> str:
    now = int(time.time())
    with db.begin() as conn:
        conn.execute(webhook_endpoints.insert().values(
            id="wh_test", project_id="p", seq=1, name="t", url=url, event_types=["fine_tuning.job.cancelled"],
            secret=secret, previous_secret=previous, previous_secret_until=now + 60 if previous else None,
            created_at=now, updated_at=now, deleted=False))
        conn.execute(jobs.insert().values(
            id="ftjob-x", project_id="p", seq=1, model="m", base_model="m", status="queued", created_at=now,
            method={"type": "supervised"}, training_file="file-x", result_files=[], seed=1, attempts=0))
        assert state.cancel(conn, "ftjob-x")
    return "ftjob-x"


def test_a_name_that_rebinds_to_a_private_address_is_refused_at_delivery(settings, db, receiver, monkeypatch):
    port = int(receiver.url.split(":")[2].split("/")[0])
    _cancelled_job_with_endpoint(db, f"http://hooks.example.com:{port}/hook", secret=signing.new_secret())
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):  # registered while public; now answers a loopback address
        return real("127.0.0.1", *args, **kwargs) if host == "hooks.example.com" else real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    deliverer = WebhookDeliverer(settings, db)
    assert deliverer.run_once() == 1
    with db.connect() as conn:
        attempt = conn.execute(sa.select(webhook_attempts)).one()
        delivery = conn.execute(sa.select(webhook_deliveries)).one()
    assert attempt.status_code is None and "127.0.0.1" in attempt.error and "non-public" in attempt.error
    assert delivery.status == "pending" and delivery.next_attempt_at > time.time()
    assert receiver.requests == []  # the attempt was over before the assertion: nothing was sent

    allowed = WebhookDeliverer(settings.model_copy(update={"webhooks_allow_private": True}), db)
    with db.begin() as conn:
        conn.execute(webhook_deliveries.update().values(next_attempt_at=time.time()))
    assert allowed.run_once() == 1
    headers, _ = receiver.wait(1)[0]
    assert headers["host"] == f"hooks.example.com:{port}"  # the name, though the address was checked


def _cert(tmp_path, name: str) -> tuple[str, str]:
    """A self-signed certificate for `name` (the openssl command line); (cert, key) paths."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_https_goes_to_the_checked_address_and_verifies_the_name(settings, db, tmp_path, monkeypatch):
    cert, key = _cert(tmp_path, "hooks.example.com")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    receiver = Receiver(tls=ctx)
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host in ("hooks.example.com", "other.example.com") else host, *a, **k))
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the default context trusts the test's certificate
    try:
        _cancelled_job_with_endpoint(db, f"https://hooks.example.com:{receiver.port}/hook",
                                     secret=signing.new_secret())
        deliverer = WebhookDeliverer(settings.model_copy(update={"webhooks_allow_private": True}), db)
        assert deliverer.run_once() == 1
        headers, _ = receiver.wait(1)[0]
        assert headers["host"] == f"hooks.example.com:{receiver.port}"
        with db.begin() as conn:  # the same address under a name the certificate does not carry
            conn.execute(webhook_endpoints.update().values(url=f"https://other.example.com:{receiver.port}/hook"))
            conn.execute(webhook_deliveries.update().values(status="pending", next_attempt_at=time.time()))
        assert deliverer.run_once() == 1
        with db.connect() as conn:
            last = conn.execute(sa.select(webhook_attempts).order_by(webhook_attempts.c.seq.desc())).first()
        assert last.status_code is None and "CERTIFICATE_VERIFY_FAILED" in last.error
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_a_rotated_secret_kept_for_a_while_still_verifies(settings, db, receiver):
    old, new = signing.new_secret(), signing.new_secret()
    jid = _cancelled_job_with_endpoint(db, receiver.url, secret=new, previous=old)
    WebhookDeliverer(settings.model_copy(update={"webhooks_allow_private": True}), db).run_once()
    headers, body = receiver.wait(1)[0]
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    for secret in (old, new):
        assert client.webhooks.unwrap(body, headers, secret=secret).data.id == jid
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=signing.new_secret())


def test_backoff_doubles_up_to_the_cap(settings):
    s = settings.model_copy(update={"webhooks_retry_seconds": 10.0, "webhooks_retry_max_seconds": 50.0})
    assert [backoff(s, n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 50.0]
