"""What this machine can do, measured in the same run as the numbers compared with it.

* `matmul_peak_flops`: FLOP/s of a large square matmul in a given dtype — the practical compute peak that
  MFU (model FLOP utilisation) is measured against. A vendor's datasheet peak is not used: on a shared
  2-core CPU it says little about what torch reaches.
* `memory_bandwidth`: bytes/s of reading (a sum) and of copying a tensor much larger than the caches —
  the bound for decoding at batch 1, which reads every LM weight once per token (DESIGN.md §7).
* `PeakMemory`: peak memory of a block of code: CUDA's `max_memory_allocated`, or on CPU the peak resident
  set size, sampled from `/proc/self/statm` by a thread (the process-wide `ru_maxrss` cannot be reset).
"""

import logging
import os
import threading
import time
from dataclasses import dataclass

import torch


logger = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    """Fastest of `repeats` timed calls, after one untimed call (allocation, kernel selection)."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def default_matmul_size(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 1024


def matmul_peak_flops(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of `(n x n) @ (n x n)` in `dtype` (2 n^3 FLOPs), best of `repeats`. On CUDA, fp32 runs as torch
    is configured (`torch.backends.cuda.matmul.allow_tf32`, off by default)."""
    size = size or default_matmul_size(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = _best_seconds(lambda: torch.mm(a, b), device, repeats)
    return 2 * size**3 / seconds


def default_bandwidth_bytes(device: torch.device) -> int:
    return 2 * 2**30 if device.type == "cuda" else 256 * 2**20


@dataclass
class Bandwidth:
    read_bytes_per_s: float  # tensor.sum(): every byte read once
    copy_bytes_per_s: float  # dst.copy_(src): bytes read + bytes written

    def to_dict(self) -> dict[str, float]:
        return {"read_gb_per_s": round(self.read_bytes_per_s / 1e9, 2), "copy_gb_per_s": round(self.copy_bytes_per_s / 1e9, 2)}


def memory_bandwidth(device: torch.device, num_bytes: int | None = None, repeats: int = 5) -> Bandwidth:
    """Read and copy bandwidth on an fp32 tensor of `num_bytes` (default 256 MiB on CPU, 2 GiB on CUDA, far
    beyond the caches)."""
    num_bytes = num_bytes or default_bandwidth_bytes(device)
    src = torch.ones(num_bytes // 4, device=device)
    dst = torch.empty_like(src)
    read = _best_seconds(lambda: src.sum(), device, repeats)
    copy = _best_seconds(lambda: dst.copy_(src), device, repeats)
    return Bandwidth(read_bytes_per_s=num_bytes / read, copy_bytes_per_s=2 * num_bytes / copy)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory inside a `with` block: `.peak_bytes` (absolute) and `.delta_bytes` (over the start).

    On CUDA the allocator's own statistics; on CPU the resident set size sampled every `interval_s` (a
    block shorter than that may miss its peak; RSS also counts allocator caches, so read it as an upper
    bound on what the block needed)."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.device = device
        self.interval_s = interval_s
        self.start_bytes = self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.start_bytes = self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())

    @property
    def delta_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes


def measure_machine(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> dict:
    """Matmul peaks (FLOP/s per dtype) and memory bandwidth, for the record and for MFU / bounds."""
    logger.info("Measuring matmul peaks %s and memory bandwidth on %s", [str(d) for d in dtypes], device)
    peaks = {str(dtype).removeprefix("torch."): matmul_peak_flops(dtype, device) for dtype in dtypes}
    bandwidth = memory_bandwidth(device)
    return {
        "matmul_peak_flops": peaks,
        "matmul_peak_tflops": {name: round(value / 1e12, 4) for name, value in peaks.items()},
        "matmul_size": default_matmul_size(device),
        "bandwidth": bandwidth,
        "memory_bandwidth": bandwidth.to_dict(),
    }
