"""The core-coupling probe: two pinned threads, a buffer overwritten after the other CPU (or the same one) read it."""

from __future__ import annotations

import os
import threading

import pytest

from mgcda_core.benchmark.host import SPLIT_RATIO, CoreCoupling, cache_sharing, core_coupling

TWO_CPUS = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2
needs_two_cpus = pytest.mark.skipif(not TWO_CPUS, reason="needs Linux per-thread affinity and two allowed CPUs")


def coupling(remote: float, local: float) -> CoreCoupling:
    return CoreCoupling((0, 1), 2 << 20, remote, local)


@needs_two_cpus
def test_the_probe_measures_two_distinct_allowed_cpus_and_leaves_the_callers_affinity_alone() -> None:
    allowed = os.sched_getaffinity(0)
    result = core_coupling(repeats=5)
    assert result is not None
    assert result.cpus[0] != result.cpus[1] and set(result.cpus) <= allowed
    assert result.nbytes == 2 << 20
    assert result.remote_overwrite_us > 0 and result.local_overwrite_us > 0
    assert result.ratio == pytest.approx(result.remote_overwrite_us / result.local_overwrite_us)
    assert result.shared_cache == (result.ratio <= SPLIT_RATIO)
    assert os.sched_getaffinity(0) == allowed  # the probe pins its own threads only


@needs_two_cpus
def test_the_probe_times_the_overwrite_itself() -> None:
    """Overwriting 128 times the bytes takes longer, on either CPU: the times are the fills, not the handshakes."""
    small, large = core_coupling(64 << 10, repeats=7), core_coupling(8 << 20, repeats=7)
    assert small is not None and large is not None
    assert large.remote_overwrite_us > small.remote_overwrite_us
    assert large.local_overwrite_us > small.local_overwrite_us


@needs_two_cpus
def test_a_thread_allowed_one_cpu_gets_no_measurement() -> None:
    results: list[object] = []

    def pinned() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread only
        results.append(core_coupling())

    thread = threading.Thread(target=pinned)
    thread.start()
    thread.join()
    assert results == [None]


@pytest.mark.parametrize(("nbytes", "repeats"), [(1024, 5), (2 << 20, 0)])
def test_the_probe_refuses_sizes_it_cannot_measure(nbytes: int, repeats: int) -> None:
    with pytest.raises(ValueError, match="nbytes must be >= 4096 and repeats >= 1"):
        core_coupling(nbytes, repeats)


def test_shared_cache_is_decided_by_the_ratio_of_the_two_overwrites() -> None:
    one_chip, two_sockets = coupling(72.0, 36.0), coupling(938.0, 70.0)  # measured values (docs/RESULTS.md)
    assert one_chip.ratio == 2.0 and one_chip.shared_cache
    assert two_sockets.ratio == pytest.approx(13.4, abs=0.01) and not two_sockets.shared_cache
    assert coupling(SPLIT_RATIO * 10.0, 10.0).shared_cache  # the threshold itself still counts as one chip
    assert "CPUs 0,1 share a cache" in one_chip.describe() and "(x2.0)" in one_chip.describe()
    assert "do NOT share a cache" in two_sockets.describe() and "938 us" in two_sockets.describe()


def test_work_is_labelled_by_what_the_probe_saw_around_it() -> None:
    shared, split = coupling(72.0, 36.0), coupling(938.0, 70.0)
    assert cache_sharing(shared, shared) == "shared"
    assert cache_sharing(split, split) == "split"
    assert cache_sharing(shared, split) == cache_sharing(split, None, shared) == "mixed"
    assert cache_sharing(None, shared) == "shared"
    assert cache_sharing(None, None) == cache_sharing() == "unknown"  # one CPU or no affinity API
