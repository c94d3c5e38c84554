"""The adapter LRU loads each adapter once, however many requests ask for it at the same moment."""

import threading
import time

import torch

from openft.serve.lora import AdapterCache, LoraAdapter


def test_concurrent_requests_for_one_adapter_load_it_once():
    cache = AdapterCache(max_adapters=4, max_bytes=1 << 20)
    calls = []
    start = threading.Barrier(8)

    def loader():
        calls.append(1)
        time.sleep(0.2)  # a disk read: long enough for every other thread to ask meanwhile
        return LoraAdapter("a", "/nowhere", {"m": (torch.zeros(2, 1), torch.zeros(1, 2))}, 16)

    got = []

    def ask():
        start.wait()
        got.append(cache.get_or_load("a", loader))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.loads == 1
    assert len({id(a) for a in got}) == 1
