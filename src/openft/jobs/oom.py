"""Did the out-of-memory killer kill our runner? The kernel's own counters say.

`snapshot()` reads the OOM-kill counters this process can see. cgroup v2's `memory.events`
`oom_kill` counts every OOM kill of a process in the cgroup, so where it exists it is the only
one read. Otherwise: cgroup v1's `memory.oom_control` `oom_kill` (kills at the cgroup's limit)
and the machine's `/proc/vmstat` `oom_kill` (any OOM kill on the host: a kill elsewhere during
the same seconds could be taken for ours, which is why it comes last). The worker takes
one before it starts a runner and `killed_since(before)` after the runner died: True when a
counter went up, False when none did, None when no counter is readable (not Linux, no /proc).

Knows Linux's files; knows nothing about jobs.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
VMSTAT = Path("/proc/vmstat")


def _counter(path: Path, key: str = "oom_kill") -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return None


def _sources(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> list[Path]:
    """The OOM counter files of this process's cgroups (v2 and v1), where they exist."""
    out: list[Path] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.lstrip("/")
        if controllers == "":  # v2 (unified)
            out += [root / rel / "memory.events", root / "unified" / rel / "memory.events"]
        elif "memory" in controllers.split(","):  # v1
            out += [root / "memory" / rel / "memory.oom_control", root / "memory" / "memory.oom_control"]
    seen, found = set(), []
    for p in out:
        if p not in seen and p.exists():
            seen.add(p)
            found.append(p)
    return found


def snapshot() -> dict[str, int]:
    """{counter file: OOM kills so far} for every readable counter."""
    sources = _sources()
    v2 = [p for p in sources if p.name == "memory.events"]
    counts = {}
    for path in v2 or [*sources, VMSTAT]:
        n = _counter(path)
        if n is not None:
            counts[str(path)] = n
    return counts


def killed_since(before: dict[str, int], after: dict[str, int] | None = None) -> bool | None:
    """True when an OOM kill was recorded between the two snapshots; None when nothing was readable."""
    after = snapshot() if after is None else after
    common = set(before) & set(after)
    if not common:
        return None
    return any(after[k] > before[k] for k in common)
