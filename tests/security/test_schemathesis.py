"""Property-based run over the live server's `/openapi.json` (schemathesis): a few hundred
generated requests, with the admin key, must never get a 5xx. Bounded in time for CI.

Each operation's schemathesis strategy is driven by hypothesis directly (schemathesis's own
pytest plugin, `from_fixture`, does not run under pytest 9: it reads a private node attribute)."""

from __future__ import annotations

import time

import schemathesis  # noqa: E402  (dev extras)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

MAX_EXAMPLES = 25    # per operation and mode (valid and invalid requests); about 20 operations
BUDGET_S = 150       # the whole run stops generating after this


def test_no_server_errors(sec_server):
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{sec_server.port}/openapi.json")
    headers = {"Authorization": f"Bearer {sec_server.api_key}"}
    failures: list[str] = []
    calls = [0]
    deadline = time.monotonic() + BUDGET_S
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]

    for op, mode in [(op, mode) for op in operations for mode in (schemathesis.GenerationMode.POSITIVE,
                                                                  schemathesis.GenerationMode.NEGATIVE)]:
        @given(op.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            if time.monotonic() > deadline:
                return
            calls[0] += 1
            response = case.call(headers=headers, timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}\n"
                                f"{case.as_curl_command()}\n{response.text[:500]}")

        try:
            run()
        except Unsatisfiable:  # nothing to get wrong in this operation (no parameters, no body)
            assert mode == schemathesis.GenerationMode.NEGATIVE, op.label
    print(f"schemathesis: {calls[0]} requests over {len(operations)} operations")
    assert calls[0] >= 300, f"only {calls[0]} requests were made"
    assert not failures, f"{len(failures)} of {calls[0]} requests got a 5xx:\n\n" + "\n\n".join(failures[:10])
