"""Process handling for tests that start (or kill) real processes.

Rules: touch only processes the test started (its own descendants, or processes it can name by
something only it created); a zombie is dead (it has exited; on machines whose PID 1 does not reap
orphans it stays listed); wait for an exit on a pidfd (the kernel says when a process exits, zombie
or reaped) instead of sleeping and polling.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterable

import psutil

__all__ = ["alive", "descendants", "same_processes", "wait_gone", "stop"]


def alive(proc: psutil.Process) -> bool:
    """The same process (pid and start time: no reused pid) is still running and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def descendants(pid: int | None = None, *, cmdline_has: str = "") -> list[psutil.Process]:
    """Live descendants of ``pid`` (default: this process) whose command line contains ``cmdline_has``."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if alive(proc) and cmdline_has in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def same_processes(noted: Iterable[tuple[int, float]]) -> list[psutil.Process]:
    """The live processes among ``(pid, create_time)`` pairs noted earlier (a reused pid is another process)."""
    found = []
    for pid, created in noted:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and alive(proc):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Block until every process has exited or ``timeout`` seconds passed; return the ones still alive."""
    fds = {}
    for proc in procs:
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            continue
        if alive(proc):  # the pidfd is this very process (no pid reuse since we listed it)
            fds[fd] = proc
        else:
            os.close(fd)
    deadline = time.monotonic() + timeout
    try:
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                fds.pop(fd)
                os.close(fd)
    finally:
        survivors = [proc for fd, proc in fds.items() if alive(proc)]
        for fd in fds:
            os.close(fd)
    return survivors


def stop(procs: Iterable[psutil.Process], *, grace: float = 5.0) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL what is left after ``grace`` seconds; return what survived even that."""
    procs = [p for p in procs if alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        procs = wait_gone(procs, wait)
        if not procs:
            break
    return procs
