"""API overhead figures (not a test; pytest does not collect it): upload / download throughput
through the SDK and the latency of a small list call, against a real server process.

    HF_HUB_OFFLINE=1 python tests/api/bench_api.py
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.api.conftest import ApiServer  # noqa: E402


def main(mib: int = 100, calls: int = 200) -> None:
    server = ApiServer(Path(tempfile.mkdtemp()) / "data", REPO / ".cache" / "test-models",
                       env={"OPENFT_EMBEDDED_WORKER": "false"}).start()
    try:
        client = server.client()
        data = os.urandom(mib * 1024 * 1024)
        t = time.perf_counter()
        f = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="user_data")
        dt = time.perf_counter() - t
        print(f"upload {mib} MiB: {dt:.2f} s ({mib / dt:.0f} MiB/s)")
        t = time.perf_counter()
        assert client.files.content(f.id).content == data
        dt = time.perf_counter() - t
        print(f"download {mib} MiB: {dt:.2f} s ({mib / dt:.0f} MiB/s)")
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            client.files.list(limit=10)
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(f"GET /v1/files?limit=10 x{calls}: median {statistics.median(lat) * 1000:.1f} ms, "
              f"p95 {lat[int(calls * 0.95) - 1] * 1000:.1f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
