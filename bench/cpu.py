"""CPU accounting around a timed run: how much of the machine the runner used, and what others used.

On a shared 2-core machine another process (a test suite, a build) can steal a large share of the
CPU during a timed run. Reading ``/proc/stat`` (all busy CPU time) and the CPU time of the runner's
own processes before and after a run tells both apart, so contaminated points are visible in the
report instead of silently skewing it. Linux only; elsewhere the meter reports nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal; idle and iowait excluded


def _clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def system_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all cores), or None without ``/proc``."""
    try:
        first = (_PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    return sum(values[i] for i in _BUSY_FIELDS if i < len(values)) / _clock_ticks()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 when it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def own_cpu_s(pids: Sequence[int]) -> float:
    times = os.times()
    return times.user + times.system + sum(process_cpu_s(pid) for pid in pids)


@dataclass(frozen=True)
class CpuUsage:
    ours_s: float  # CPU seconds of the benchmark process and the runner's subprocesses
    others_s: float  # busy CPU seconds of everything else on the machine
    elapsed_s: float
    cores: int

    @property
    def ours_share(self) -> float:
        """Fraction of the machine's CPU capacity the runner used during the run."""
        return self.ours_s / (self.elapsed_s * self.cores)

    @property
    def others_share(self) -> float:
        """Fraction of the machine's CPU capacity other processes used during the run."""
        return self.others_s / (self.elapsed_s * self.cores)


class CpuMeter:
    """``start()`` before a timed run, ``stop()`` after; ``stop`` returns None without ``/proc``."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._busy = system_busy_s()
        self._ours = own_cpu_s(self._pids)
        self._started = time.perf_counter()

    def stop(self) -> CpuUsage | None:
        elapsed = time.perf_counter() - self._started
        busy = system_busy_s()
        if busy is None or self._busy is None or elapsed <= 0:
            return None
        ours = own_cpu_s(self._pids) - self._ours
        others = max(0.0, busy - self._busy - ours)
        return CpuUsage(ours_s=ours, others_s=others, elapsed_s=elapsed, cores=os.cpu_count() or 1)


def machine_busy_share(interval_s: float = 1.0) -> float | None:
    """Share of all cores busy over the next ``interval_s`` seconds (everything on the machine)."""
    before = system_busy_s()
    time.sleep(interval_s)
    after = system_busy_s()
    if before is None or after is None:
        return None
    return (after - before) / (interval_s * (os.cpu_count() or 1))


def wait_for_quiet(threshold: float, max_wait_s: float) -> tuple[float | None, float]:
    """Sample until the machine is below ``threshold`` busy (or time runs out): (last share, waited s)."""
    started = time.perf_counter()
    share = machine_busy_share()
    while share is not None and share > threshold and time.perf_counter() - started < max_wait_s:
        share = machine_busy_share()
    return share, time.perf_counter() - started
