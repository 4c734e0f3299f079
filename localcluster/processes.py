"""Starting, probing and stopping component processes, each in its own process group.

Each component is a session leader, so stopping it signals the whole group (anything it forked
goes too). A component started for a test dies with the test process (PR_SET_PDEATHSIG), even
when that process is killed outright: by SIGKILL, since a dead parent cannot follow a SIGTERM up
with anything (kube-apiserver drains for 30 s and more on SIGTERM, long enough for the next
start to find the machine's real node still held); one started by `up` outlives it and is
found again by pid and start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from localcluster.components import ComponentSpec

_PR_SET_PDEATHSIG = 1
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 10.0


class ComponentFailedError(RuntimeError):
    """A component exited or never became healthy; the message ends with its log's tail."""


class PortInUseError(ComponentFailedError):
    """A component lost the race for the free port it was given; retry with fresh ports."""


@dataclass(frozen=True, kw_only=True)
class Component:
    """A started component: enough to find it again from another process."""

    name: str
    pid: int
    create_time: float
    log: Path

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "create_time": self.create_time,
            "log": str(self.log),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Component:
        return cls(
            name=str(record["name"]),
            pid=int(record["pid"]),
            create_time=float(record["create_time"]),
            log=Path(str(record["log"])),
        )


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent_hook() -> Any:
    libc = _libc()  # loaded before fork: dlopen is not safe in the child
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def start(
    spec: ComponentSpec, *, log: Path, env: Mapping[str, str], die_with_parent: bool
) -> tuple[Component, subprocess.Popen[bytes]]:
    """Start `spec` in a new session, appending stdout and stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as log_file:
        log_file.write(f"==> {' '.join(spec.argv)}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**env, **spec.env},
            start_new_session=True,
            preexec_fn=_die_with_parent_hook() if die_with_parent else None,
        )
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # already gone: wait_healthy reports it with the log
    return Component(name=spec.name, pid=popen.pid, create_time=create_time, log=log), popen


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:])


def _failure(component: Component, what: str) -> ComponentFailedError:
    tail = log_tail(component.log)
    message = f"{component.name} {what}; last lines of {component.log}:\n{tail}"
    if "address already in use" in tail:
        return PortInUseError(message)
    return ComponentFailedError(message)


def probe(url: str, *, context: ssl.SSLContext | None, timeout: float = 2.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the response's socket
        return False
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def wait_healthy(
    component: Component,
    popen: subprocess.Popen[bytes],
    *,
    url: str,
    context: ssl.SSLContext | None,
    timeout: float,
) -> None:
    """Poll `url` until it answers 200; fail early, with the log, if the process exits."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if popen.poll() is not None:
            raise _failure(component, f"exited with status {popen.returncode} while starting")
        if probe(url, context=context):
            return
        if time.monotonic() > deadline:
            raise _failure(component, f"did not answer 200 on {url} within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def is_running(component: Component) -> bool:
    """The recorded process still runs (same pid *and* start time: pids get recycled)."""
    try:
        process = psutil.Process(component.pid)
        return (
            abs(process.create_time() - component.create_time) < 0.05
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes in process group `pgid`."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def _signal_group(component: Component, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(component.pid, signum)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(watched: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `watched` runs; those still running after `timeout`.

    An exited process counts as gone before whoever reaps it does (init may be slow to).
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in watched if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def stop(
    components: Iterable[Component],
    *,
    popens: Mapping[int, subprocess.Popen[bytes]] | None = None,
    grace: float = STOP_GRACE_SECONDS,
) -> None:
    """SIGTERM each component's group together, SIGKILL what is left after `grace`, reap."""
    given = list(components)
    ours = [c for c in given if is_running(c)]
    for component in ours:
        _signal_group(component, signal.SIGTERM)
    watched = []
    for component in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            watched.append(psutil.Process(component.pid))
    alive = _wait_gone(watched, grace)
    for component in ours:
        if any(p.pid == component.pid for p in alive) or group_members(component.pid):
            _signal_group(component, signal.SIGKILL)
    _wait_gone(alive, grace)
    for component in given:  # crashed ones too: they are zombies until reaped
        popen = (popens or {}).get(component.pid)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=grace)  # reap our children so no zombie is left
