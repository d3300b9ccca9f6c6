"""tests/processes.py on processes this test starts: zombies count as dead, SIGKILL follows an ignored SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil

from tests.processes import alive, descendants, same_processes, stop, wait_gone

IGNORES_TERM = ("import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "sys.stdin.read()")


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # its handlers are installed
    return proc


def test_an_unreaped_child_is_dead_and_listed_nowhere():
    proc = _child("print('ready', flush=True)")
    handle = psutil.Process(proc.pid)
    assert wait_gone([handle], timeout=60) == []
    assert handle.status() == psutil.STATUS_ZOMBIE  # nobody reaped it yet: still in the process table
    assert not alive(handle) and proc.pid not in [p.pid for p in descendants()]
    proc.wait()


def test_stop_kills_a_child_that_ignores_sigterm():
    proc = _child(IGNORES_TERM)
    handle = psutil.Process(proc.pid)
    assert handle in descendants(cmdline_has="SIG_IGN")
    assert stop([handle], grace=0.5) == []
    assert proc.wait(timeout=60) == -signal.SIGKILL


def test_noted_processes_are_found_again_only_while_the_same_process_lives():
    proc = _child(IGNORES_TERM)
    handle = psutil.Process(proc.pid)
    noted = [(proc.pid, handle.create_time())]
    assert same_processes(noted) == [handle]
    assert same_processes([(proc.pid, handle.create_time() - 1.0)]) == []  # another start time: not ours
    assert stop(same_processes(noted), grace=0.5) == [] and same_processes(noted) == []
    proc.wait()
