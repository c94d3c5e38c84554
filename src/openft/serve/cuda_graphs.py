"""CUDA graphs of the static decode step: captured once per shape, replayed every step.

`DecodeGraphs.run(key, fn, keep)` captures `fn` (static_decode.StaticDecoder.forward for one rows
bucket, key-length bucket and adapter set) the first time `key` is seen, after one warm-up run on a
side stream, and replays it afterwards: the step's few hundred kernel launches become one, and the
host goes back to sampling while the device works. `keep` (the LoRA weights and mask buffers the
graph reads by address) stays referenced as long as the graph. All graphs share one memory pool;
steps run one after another on one thread, so their intermediates never overlap in time.

A capture that fails for any reason but memory turns graphs off for this runner with one warning
(the eager fixed-shape step goes on); out of memory is raised to the engine, which fails that
step's requests. Only executes on CUDA: on CPU the static step runs eagerly and this class is not
built. Knows nothing about models or serving.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch

log = logging.getLogger(__name__)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class DecodeGraphs:
    def __init__(self, max_graphs: int = 48):
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()   # key -> (graph, output, keep)
        self._pool = None
        self.disabled: str | None = None     # why capture was turned off, if it was
        self.captures = 0                    # graphs captured (stats)
        self.replays = 0

    def clear(self) -> None:
        self._graphs.clear()

    def run(self, key: tuple, fn, keep) -> torch.Tensor:
        hit = self._graphs.get(key)
        if hit is None:
            if self.disabled is not None:
                return fn()
            try:
                hit = self._capture(fn, keep)
            except _OOM:
                self.clear()
                raise
            except Exception as e:  # noqa: BLE001 - a model whose step cannot be captured still serves
                self.disabled = f"{type(e).__name__}: {e}"
                self.clear()
                log.warning("CUDA graph capture failed; decoding without graphs: %s", self.disabled)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                return fn()
            self._graphs[key] = hit
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        hit[0].replay()
        self.replays += 1
        return hit[1]

    def _capture(self, fn, keep) -> tuple:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()   # warm-up (cuBLAS workspaces, lazy inits); writes the same keys/values the replay writes
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a request thread loading an adapter meanwhile (a host->device copy) neither fails
        # nor spoils this capture; only this thread's calls are checked
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            out = fn()
        self.captures += 1
        return graph, out, keep
