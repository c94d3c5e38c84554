"""Webhook targets found by the security probe (issue 21, section 4): an IPv6 site-local address
(fec0::/10, which `ipaddress` still counts as global) and IPv4-mapped forms of private addresses
are refused, and the test endpoint reports `success` only for a 2xx answer."""

from __future__ import annotations

import pytest

from openft.webhooks import targets
from tests.support.receiver import DELIVERING_ENV, Receiver
from tests.support.servers import ServerSpec, running


@pytest.mark.parametrize("address", ["fec0::1", "feff:ffff::1", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
                                     "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::", "ff02::1", "fd00::1"])
def test_non_public_ipv6_forms_are_refused(address):
    assert targets.is_public(address) is False


def test_site_local_url_is_refused_at_registration():
    with pytest.raises(targets.TargetRefused, match="non-public"):
        targets.check("http://[fec0::1]/", allow_private=False)


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory, model_cache):
    env = {**DELIVERING_ENV}
    with running(ServerSpec(worker=False, env=env).server(tmp_path_factory.mktemp("hooks") / "data",
                                                          model_cache)) as s:
        yield s


@pytest.mark.parametrize("code,success", [(500, False), (404, False), (302, False), (204, True)])
def test_test_event_succeeds_only_on_2xx(hook_server, code, success):
    receiver = Receiver(codes=[code])
    try:
        api = hook_server.client()
        ep = api.webhooks.create(url=receiver.url, event_types=["fine_tuning.job.succeeded"], name="t")
        out = api.post(f"/webhook_endpoints/{ep.id}/test", body={"event_type": "fine_tuning.job.succeeded"},
                       cast_to=object)
        assert (out["status_code"], out["success"]) == (code, success)
    finally:
        receiver.close()
