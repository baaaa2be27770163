"""How tightly two CPUs of this machine are coupled: whether they behave like cores of one chip.

Two threads of one process, pinned to two CPUs, hand a buffer back and forth: one reads what the other wrote,
then the writer overwrites it. Overwriting cache lines that another core holds costs one coherence round trip per
line; between two cores of one chip (a shared last-level cache) that is about as cheap as overwriting lines the
core read itself, between two sockets or dies it is many times dearer. A virtual machine's two vCPUs can move
between the two while it runs: measured on a 2-vCPU VM (docs/RESULTS.md), overwriting 2 MiB the other vCPU had
just read took 38 µs in some minutes and 840 µs in others, and ONNX Runtime's two threads, which hand every
operator's output to each other, then took the shipped graph from 80 to 130 ms, while one thread stayed at 141 ms
throughout. A speed measured without knowing which of the two the host gave is not comparable to another.

Linux only (per-thread affinity through ``os.sched_setaffinity``); ``None`` elsewhere or with fewer than two CPUs.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

#: remote / local overwrite time above which two CPUs are taken not to share a cache. Measured on one 2-vCPU VM:
#: 1.0-2.1 in the minutes its vCPUs behaved as one chip, 13-24 in the others (cache-line round trip 52-121 against
#: 305-353 ns then); the threshold sits between the two, a factor of 2.4 or more from either.
SPLIT_RATIO = 5.0
PROBE_BYTES = 2 << 20  # larger than a core's L2, smaller than a chip's L3: the lines live in the shared cache


@dataclass(frozen=True)
class CoreCoupling:
    """One measurement between ``cpus``: medians of overwriting ``nbytes`` that the other CPU (``remote``) or the
    same CPU (``local``) had just read, in microseconds."""

    cpus: tuple[int, int]
    nbytes: int
    remote_overwrite_us: float
    local_overwrite_us: float

    @property
    def ratio(self) -> float:
        return self.remote_overwrite_us / self.local_overwrite_us

    @property
    def shared_cache(self) -> bool:
        """Whether the two CPUs behave like cores of one chip (see ``SPLIT_RATIO``)."""
        return self.ratio <= SPLIT_RATIO

    def describe(self) -> str:
        kind = "share a cache" if self.shared_cache else "do NOT share a cache"
        return (f"CPUs {self.cpus[0]},{self.cpus[1]} {kind}: overwriting {self.nbytes >> 20} MiB the other one read "
                f"{self.remote_overwrite_us:.0f} us, the same one {self.local_overwrite_us:.0f} us "
                f"(x{self.ratio:.1f})")


def core_coupling(nbytes: int = PROBE_BYTES, repeats: int = 15) -> CoreCoupling | None:
    """Measure the coupling of the first two CPUs this process may run on (takes ~10 ms); ``None`` when per-thread
    affinity is unavailable or fewer than two CPUs are allowed."""
    if nbytes < 4096 or repeats < 1:
        raise ValueError(f"nbytes must be >= 4096 and repeats >= 1, got {nbytes} and {repeats}")
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    writer_cpu, reader_cpu = cpus[0], cpus[1]
    shared = np.zeros(nbytes // 4, np.float32)
    own = np.zeros_like(shared)
    sink = np.zeros_like(shared)
    handed = [threading.Event() for _ in range(repeats)]  # writer -> reader: "written, read it"
    read = [threading.Event() for _ in range(repeats)]  # reader -> writer: "read, overwrite it"
    remote: list[float] = []
    local: list[float] = []
    failure: list[BaseException] = []

    def timed_fill(buffer: np.ndarray, value: float, into: list[float]) -> None:
        start = time.perf_counter()
        buffer.fill(value)
        into.append(time.perf_counter() - start)

    def writer() -> None:
        try:
            os.sched_setaffinity(0, {writer_cpu})  # 0: the calling thread
            shared.fill(-1.0)
            for i in range(repeats):
                handed[i].set()
                if not read[i].wait(10.0):
                    raise TimeoutError("the reader thread did not answer within 10 s")
                timed_fill(shared, float(i), remote)  # lines the reader's core holds
                np.copyto(sink, own)
                timed_fill(own, float(i), local)  # lines this core itself just read
        except BaseException as error:  # reported by the caller's thread
            failure.append(error)
            for event in read:
                event.set()

    def reader() -> None:
        try:
            os.sched_setaffinity(0, {reader_cpu})
            scratch = np.zeros_like(shared)
            for i in range(repeats):
                if not handed[i].wait(10.0):
                    raise TimeoutError("the writer thread did not answer within 10 s")
                np.copyto(scratch, shared)
                read[i].set()
        except BaseException as error:
            failure.append(error)
            for event in handed:
                event.set()

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=reader, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failure:
        raise RuntimeError(f"core coupling probe failed: {failure[0]!r}") from failure[0]
    return CoreCoupling((writer_cpu, reader_cpu), nbytes, statistics.median(remote) * 1e6,
                        statistics.median(local) * 1e6)


def cache_sharing(*measurements: CoreCoupling | None) -> str:
    """Summary of measurements taken around one timed piece of work: "shared" (every one saw the CPUs share a
    cache), "split" (none did), "mixed" (the host moved them in between) or "unknown" (nothing measured)."""
    seen = {m.shared_cache for m in measurements if m is not None}
    if not seen:
        return "unknown"
    return "mixed" if len(seen) == 2 else ("shared" if seen == {True} else "split")
