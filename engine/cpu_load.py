"""How busy this machine's CPUs are: the share of the cores this process may run on that were in use since the
last look. Live mode asks before it spends spare time on more tiles a frame (runner.py, `_spend_headroom`).

Two views, the larger wins: the process's own CPU time (every thread, native ones included), and, on Linux, the
whole machine's busy time from /proc/stat (the stream outputs' encoders, OBS on the same rig). In a container
/proc/stat counts the host's CPUs, usually idle; the process's own time still counts there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD" (`docker --cpus`)


def usable_cores() -> float:
    """Cores this process may run on: its affinity (a `taskset`, a container's cpuset), and no more than a
    container's CPU quota allows."""
    try:
        cores = float(max(1, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # not Linux
        cores = float(max(1, os.cpu_count() or 1))
    try:
        quota, period = CPU_MAX.read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            cores = min(cores, max(0.1, float(quota) / float(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or no quota
        pass
    return cores


def _machine_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat cannot be read."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()
        values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if fields[:1] != ["cpu"] or len(values) < 5:  # not the layout this reads
        return None
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuLoad:
    """Busy share since the previous `sample()` (0 to 1 of the usable cores)."""

    def __init__(self) -> None:
        self.cores = usable_cores()
        self._wall, self._own, self._machine = time.monotonic(), time.process_time(), _machine_times()

    def sample(self) -> float:
        wall, own, machine = time.monotonic(), time.process_time(), _machine_times()
        elapsed = wall - self._wall
        share = (own - self._own) / (elapsed * self.cores) if elapsed > 0 else 0.0
        if machine is not None and self._machine is not None and machine[1] > self._machine[1]:
            share = max(share, (machine[0] - self._machine[0]) / (machine[1] - self._machine[1]))
        self._wall, self._own, self._machine = wall, own, machine
        return min(1.0, max(0.0, share))
