"""Is a process still running? Used to tell a run whose worker was killed (OOM killer, kill -9,
a lost node) from a live run that still holds a concurrency slot. Nothing here knows Dagster."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["process_alive"]


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_alive(pid: int, started_before: float | None = None) -> bool:
    """True if ``pid`` is a live process on this machine (not a zombie) that started no later than
    ``started_before`` (epoch seconds, when given): a process started after that is another
    program that reuses the pid of a dead one."""
    if pid <= 0:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):  # a zombie or dead task: its program is gone
        return False
    if started_before is not None:
        boot = _boot_time()
        if boot is not None:
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
            if started > started_before + 1.0:  # btime has 1 s resolution
                return False
    return True
