"""What /proc says about processes: alive or not, process groups, and which ones belong to a stack.

supervisord tracks the processes it started; these answer what it cannot: whether the rest of a
process group outlived its leader, and whether anything of a stack is left after supervisord is gone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm)"; comm may contain spaces


def alive(pid: int) -> bool:
    f = _stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")  # a zombie has exited; only its parent has not reaped it


def group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f and f[2] == str(pgid) and f[0] not in ("Z", "X"):
                return True
    return False


def ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 0 and pid not in out:
        out.add(pid)
        f = _stat_fields(pid)
        pid = int(f[1]) if f else 0
    return out


def kill(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_groups_gone(pgids: list[int], timeout: float) -> None:
    """Wait for whole process groups to exit; SIGKILL what is left of them after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_alive(g) for g in pgids):
        time.sleep(0.2)
    for g in pgids:
        if group_alive(g):
            kill(g, signal.SIGKILL, group=True)


def owned_processes(home: Path, marker: str, *, env_only: bool = False) -> list[tuple[int, str]]:
    """Live processes (not us or our ancestors) of the stack in ``home``: ``marker=home`` in their
    environment, else (unless env_only) ``home`` in their command line or working directory."""
    home_s = str(home)
    tag = f"{marker}={home_s}".encode()
    skip = ancestors(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip or not alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        pid = int(entry.name)
        if tag in environ:
            found.append((pid, f"env: {cmdline[:80]}"))
        elif env_only:
            continue
        elif home_s in cmdline:
            found.append((pid, f"cmdline: {cmdline[:80]}"))
        elif cwd == home_s or cwd.startswith(home_s + os.sep):
            found.append((pid, f"cwd: {cmdline[:80]}"))
    return found
