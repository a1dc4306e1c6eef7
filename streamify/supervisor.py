"""A small process supervisor: start named children, prefix their output, wait until they are ready,
and stop them all together.

Policy: when a child exits on its own, the supervisor logs ``process_exited`` with its name and exit
code, stops every other child and returns 1. A local stack with one piece silently missing (or
restarting in a loop on a persistent error such as a port in use or a failed migration) is worse
than a loud stop; restarting is the job of the orchestrator in production (Kubernetes).

Children run in their own session, so a Ctrl-C in the terminal reaches only the supervisor, which
then stops them together: SIGTERM to each child's process group, a grace period, then SIGKILL. On
Linux each child also gets SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG).

Start-up speed: on a 2-core machine, seven fresh interpreters each importing FastAPI, SQLAlchemy,
redis and friends (~3.5 s of CPU apiece) take ~15 s before any of them serves. So a child whose
command is ``<this python> -m <module> ...`` is, on Linux, forked from the supervisor after it has
imported those libraries (:func:`preload`) and runs the module with :mod:`runpy`, as
``python -m`` would, in a process with the child's own environment, session and output pipe. Only
libraries are preloaded, never the children's own modules, so nothing that reads the environment at
import time sees the supervisor's. ``STREAMIFY_FORK=0`` (or any other command) uses a fresh
interpreter per child instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, TextIO

import httpx
import structlog

STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.1
LINE_LIMIT = 1024 * 1024
# Ctrl-C, a polite kill, a closed terminal: each stops the stack the same way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    # GET answers 200 once the process can serve; None: running is ready (workers).
    ready_url: str | None = None


def fork_enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("STREAMIFY_FORK", "1") != "0"


def preload(modules: Iterable[str]) -> list[str]:
    """Import libraries the children share, so forked children start with them; returns the failures."""
    failed = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            failed.append(module)
    return failed


class PrefixedOutput:
    """Writes each line as ``name | line`` with the names aligned."""

    def __init__(self, out: TextIO, width: int) -> None:
        self.out = out
        self.width = width

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{name:<{self.width}} | {text}\n")
        self.out.flush()

    def writer(self, name: str) -> _NamedWriter:
        return _NamedWriter(self, name)


class _NamedWriter:
    """File-like for structlog's PrintLogger: the supervisor's own lines get its prefix too."""

    def __init__(self, output: PrefixedOutput, name: str) -> None:
        self.output, self.name = output, name
        self._pending = ""

    def write(self, text: str) -> None:
        # print() writes the message and the newline separately: emit complete lines only.
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self.output.line(self.name, line)

    def flush(self) -> None:
        self.output.out.flush()


# -- Starting one child -------------------------------------------------------------------------


@dataclass
class Child:
    spec: ProcessSpec
    pid: int
    output_fd: int
    # Blocks until the child exits; its exit code (negative signal number when killed by one).
    wait: Callable[[], int]
    forked: bool
    exited: asyncio.Future[int] = field(init=False)
    pumping: asyncio.Task[None] = field(init=False)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _runs_module(spec: ProcessSpec) -> bool:
    return len(spec.argv) >= 3 and spec.argv[0] == sys.executable and spec.argv[1] == "-m"


def _spawn(spec: ProcessSpec) -> Child:
    """A fresh interpreter (or any program) in its own session, output to a pipe."""
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(  # noqa: S603 - commands built by streamify.stack
            spec.argv,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        os.close(write_fd)
    return Child(spec, process.pid, read_fd, process.wait, forked=False)


def _fork(spec: ProcessSpec) -> Child:
    """``python -m module args`` run in a fork of this (preloaded) interpreter."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage does not follow it
        os.close(read_fd)
        _child_main(spec, write_fd)
    os.close(write_fd)

    def wait() -> int:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    return Child(spec, pid, read_fd, wait, forked=True)


def _child_main(spec: ProcessSpec, write_fd: int) -> NoReturn:  # pragma: no cover - runs in the child
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        # Undo what the supervisor's event loop installed; the child's own loop sets its own.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(null)
        os.close(write_fd)
        # Fresh text streams on the new descriptors (sys.stdout may be a test's capture object).
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        os.environ.clear()
        os.environ.update(spec.env)
        structlog.reset_defaults()
        # The supervisor ran event loops before forking (database set-up); start from a clean slate.
        asyncio.set_event_loop_policy(None)
        logging.getLogger().handlers.clear()
        sys.argv = [spec.argv[0], *spec.argv[3:]]
        runpy.run_module(spec.argv[2], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# -- The supervisor -----------------------------------------------------------------------------


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        output: PrefixedOutput,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        fork: bool | None = None,
    ) -> None:
        self.specs = list(specs)
        self.output = output
        self.log = structlog.get_logger("streamify")
        self.stop_timeout_s = stop_timeout_s
        self.fork = fork_enabled() if fork is None else fork
        self.children: list[Child] = []
        self._waiters = ThreadPoolExecutor(max_workers=max(1, len(self.specs)), thread_name_prefix="wait")

    def launch(self) -> None:
        """Start every child. Call before the event loop starts: forks need a process without a
        running loop or helper threads (``run`` launches without forking otherwise)."""
        if self.children:
            return
        fork = self.fork and threading.active_count() == 1 and not _loop_running()
        for spec in self.specs:
            self.children.append(_fork(spec) if fork and _runs_module(spec) else _spawn(spec))

    def terminate_now(self, timeout_s: float = 5.0) -> None:
        """Stop the children without an event loop (start-up interrupted before ``run``)."""
        for child in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        alive = {child.pid for child in self.children}
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                alive.discard(pid)
            time.sleep(0.05)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.exited = loop.run_in_executor(self._waiters, child.wait)
            child.pumping = asyncio.create_task(self._pump(child))
            self.log.info("process_started", name=child.spec.name, pid=child.pid, forked=child.forked)

    async def _pump(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        pipe = os.fdopen(child.output_fd, "rb", buffering=0)  # the transport owns and closes it
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # a line longer than the limit: pass it on in pieces
                    raw = await reader.read(LINE_LIMIT)
                if not raw:
                    return
                self.output.line(child.spec.name, raw.decode(errors="replace").rstrip("\n"))
        finally:
            transport.close()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Returns when every child with a ready URL answers 200 on it."""

        async def ready(client: httpx.AsyncClient, url: str) -> None:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(READY_POLL_S)

        async with httpx.AsyncClient(timeout=2.0) as client:
            urls = [c.spec.ready_url for c in self.children if c.spec.ready_url]
            polls = [asyncio.create_task(ready(client, url)) for url in urls]
            try:
                _, pending = await asyncio.wait(polls, timeout=timeout_s)
            finally:
                for poll in polls:
                    poll.cancel()
                await asyncio.gather(*polls, return_exceptions=True)
            if pending:
                raise TimeoutError(f"not ready after {timeout_s} s")

    async def first_exit(self) -> Child:
        """The first child that exits (on its own or not)."""
        done, _ = await asyncio.wait([c.exited for c in self.children], return_when=asyncio.FIRST_COMPLETED)
        finished = done.pop()
        return next(c for c in self.children if c.exited is finished)

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if not child.exited.done():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, sig)

    async def stop(self) -> None:
        """SIGTERM every child's process group, wait, SIGKILL what is left; drain the output."""
        running = [c.spec.name for c in self.children if not c.exited.done()]
        if running:
            self.log.info("stopping", names=running)
        self._signal_all(signal.SIGTERM)
        if self.children:
            _, pending = await asyncio.wait([c.exited for c in self.children], timeout=self.stop_timeout_s)
            if pending:
                self.log.warning(
                    "kill_after_timeout",
                    names=[c.spec.name for c in self.children if c.exited in pending],
                    timeout_s=self.stop_timeout_s,
                )
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(pending)
            # A grandchild that outlived its parent would hold the pipe open: its group goes too.
            for child in self.children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            await asyncio.wait([c.pumping for c in self.children], timeout=2.0)
        for child in self.children:
            child.pumping.cancel()
            self.log.info("process_stopped", name=child.spec.name, exit_code=child.exited.result())
        self._waiters.shutdown(wait=False)

    async def run(
        self, *, on_ready: Callable[[float], None], ready_timeout_s: float = READY_TIMEOUT_S
    ) -> int:
        """Start everything, report readiness, run until a signal (0) or a child's exit (1)."""
        started = time.monotonic()
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig.name)
            stop_requested.set()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            try:
                self.launch()
            except BaseException:
                self.terminate_now(timeout_s=0)
                raise
            self._watch()
            ready = asyncio.create_task(self.wait_ready(ready_timeout_s))
            crashed = asyncio.create_task(self.first_exit())
            stopped = asyncio.create_task(stop_requested.wait())
            await asyncio.wait([ready, crashed, stopped], return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not crashed.done() and not stopped.done():
                if ready.exception() is not None:
                    self.log.error("not_ready", timeout_s=ready_timeout_s)
                    return await self._shutdown(1, crashed, stopped, ready)
                on_ready(time.monotonic() - started)
                await asyncio.wait([crashed, stopped], return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                self.log.info("signal_received", signal=received[0] if received else None)
                return await self._shutdown(0, crashed, stopped, ready)
            child = crashed.result()
            self.log.error("process_exited", name=child.spec.name, exit_code=child.exited.result())
            return await self._shutdown(1, crashed, stopped, ready)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _shutdown(self, code: int, *tasks: asyncio.Task[object]) -> int:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.stop()
        return code
