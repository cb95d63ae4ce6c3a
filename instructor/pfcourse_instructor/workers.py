"""The grader's workers: one fresh process per submission, forked from a pre-imported zygote.

Each submission is graded in a worker process of its own (:func:`.grading.grade_job`: it drives the
submission's sandbox and runs the checks), in a session of its own, killed with everything it
started when it is done or over its time. Starting a Python that imports jax, NumPy and SymPy costs
seconds of CPU per submission, so the grader starts one **zygote** per class (``python -m
pfcourse_instructor.workers``) that imports them once and forks a worker per job. The zygote
never initialises a JAX backend (no threads but OpenBLAS's, which is fork-safe), so each worker starts
from the same clean state a fresh process would. Jobs arrive with the write end of a pipe for the
worker's answer (SCM_RIGHTS on a socket pair), so the zygote sees nothing of the submissions.

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .sandbox import SandboxUnavailable, kill_processes, reap, require_sandbox

_LOCK = threading.Lock()
_ZYGOTE: list[Zygote] = []
_ENTRY: list[tuple] = []   # the entry, the preloads and the environment (class_workers)


class Zygote:
    """The grader's handle on its zygote: :meth:`fork` a worker for a job, :meth:`close` at the end."""

    def __init__(self, entry: str, preload: tuple[str, ...] = (), env: dict[str, str] | None = None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        main = ("from pfcourse_instructor.workers import zygote_main; "
                f"zygote_main({theirs.fileno()}, {entry!r}, {tuple(preload)!r})")
        self.proc = subprocess.Popen([sys.executable, "-c", main], pass_fds=[theirs.fileno()],
                                     env={**os.environ, **(env or {})},
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.channel = ours

    def fork(self, job: dict) -> tuple[int, int]:
        """Start a worker on ``job``: its pid and the read end of the pipe its answer comes on."""
        read, write = os.pipe()
        try:
            socket.send_fds(self.channel, [json.dumps(job).encode()], [write])
            pid = int(self.channel.recv(64))
        except (OSError, ValueError):
            os.close(read)
            raise
        finally:
            os.close(write)
        return pid, read

    def close(self) -> None:
        """End the zygote (it exits when its socket closes; killed if it does not within 10 s)."""
        self.channel.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_processes([self.proc.pid], self.proc.pid)
            self.proc.wait()


def _fork(job: dict) -> tuple[int, int]:
    """A worker forked by this grader's zygote (started, or restarted, on demand)."""
    with _LOCK:
        if not _ZYGOTE or _ZYGOTE[0].proc.poll() is not None:
            _ZYGOTE[:] = [Zygote(*_ENTRY[0])]
        return _ZYGOTE[0].fork(job)


@contextlib.contextmanager
def class_workers(entry: str, preload: tuple[str, ...] = (), env: dict[str, str] | None = None):
    """What a class's workers share: the function each one runs on its job (``entry``,
    ``"module:function"``, imported once by the zygote, with the modules ``preload``, in this
    process's environment updated with ``env``), a folder for the JAX compilation cache (yielded;
    removed after) and the zygote (ended after)."""
    with tempfile.TemporaryDirectory(prefix="pfcourse-jit-") as cache:
        with _LOCK:
            _ENTRY[:] = [(entry, tuple(preload), dict(env or {}))]
        try:
            yield cache
        finally:
            with _LOCK:
                for zygote in _ZYGOTE:
                    zygote.close()
                _ZYGOTE.clear()


def run_worker(job: dict, timeout: float) -> tuple[dict | None, str]:
    """Run ``job`` in a fresh worker: its JSON answer, or None and why there is none."""
    pid, read = _fork(job)
    deadline, data = time.monotonic() + timeout, b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read], [], [], left)[0]:
                return None, f"the submission ran over the total time limit of {timeout:g} s"
            chunk = os.read(read, 1 << 20)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read)
        kill_processes([pid], pid)
    try:
        answer = json.loads(data)
    except ValueError:
        return None, "the grader failed on this submission: its worker died without an answer"
    if "error" in answer:
        return None, f"the grader failed on this submission: {str(answer['error'])[:300]}"
    return answer, ""


def _entry_function(entry: str):
    """The function named by ``"module:function"`` (its module imported)."""
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


def _work(job: dict, fd: int, entry: str):
    """In a forked worker: run ``entry`` on ``job``, write the answer on ``fd``, exit (never returns)."""
    code = 1
    try:
        try:
            answer = {"rows": _entry_function(entry)(job)}
            usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            answer["cpu"] = sum(u.ru_utime + u.ru_stime for u in usage)    # its sandboxes' included
        except Exception as err:       # the worker's own failure: the submission's reason
            answer = {"error": f"{type(err).__name__}: {err}"}
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(answer))
        code = 0
    finally:
        os._exit(code)


def zygote_main(fd: int, entry: str, preload: tuple[str, ...] = ()) -> int:
    """The zygote: import what every worker needs once (``entry``'s module, jax, NumPy, SymPy and
    ``preload``; none of them may start a JAX backend), then fork one worker per job received."""
    import jax
    import numpy  # noqa: F401
    import sympy  # noqa: F401

    _entry_function(entry)
    for module in preload:
        importlib.import_module(module)

    jax.config.update("jax_enable_x64", True)      # as every assignment's setup; checks recompute in float64
    with contextlib.suppress(SandboxUnavailable):  # checked once here, the answer inherited by every worker
        require_sandbox()
    channel = socket.socket(fileno=fd)
    while True:
        reap()                                      # workers the grader has killed (their CPU time counts)
        try:
            message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
        except OSError:
            message, fds = b"", []
        if not message or len(fds) != 1:
            break
        pid = os.fork()
        if pid == 0:
            channel.close()
            os.setsid()
            _work(json.loads(message), fds[0], entry)
        os.close(fds[0])
        channel.send(str(pid).encode())
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return 0
