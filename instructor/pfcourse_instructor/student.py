"""The student's process: runs notebook cells and probes sent over a pipe, answers over another.

Started by :mod:`.sandbox` (``python -I -m pfcourse_instructor.student READ_FD WRITE_FD``), in the
sandbox, with nothing on its command line but two file descriptors. Each message is a JSON object
after an 8-byte length. ``{"op": "run", "code", "timeout"}`` runs a notebook cell in an IPython
shell (magics work, output goes to ``/dev/null``); ``{"op": "probe", "code", "timeout"}`` runs the
probe part of a hidden test in a copy of the notebook's namespace and answers with ``probe``
encoded by :func:`.wire.encode`. A cell past its time limit gets an exception from ``SIGALRM``; one
that ignores it is killed by the grader with everything it started.

Everything here runs where the student's code can change it; the grader trusts none of its
answers beyond what the probe's value is (see ``coursework/README.md``).

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import sys

from .wire import encode        # imported before any student code runs (which may break imports)

HEADER = struct.Struct(">Q")


class CellTimeout(BaseException):
    """Raised in the cell that runs past its time limit."""


def _read(fd: int) -> dict | None:
    head = _read_exactly(fd, HEADER.size)
    if head is None:
        return None
    body = _read_exactly(fd, HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write(fd: int, message: dict) -> None:
    body = json.dumps(message).encode()
    data = HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data):]


def _alarm(signum, frame):
    raise CellTimeout()


def _describe(err: BaseException | None) -> dict:
    if err is None:
        return {"status": "ok"}
    if isinstance(err, CellTimeout):
        return {"status": "timeout"}
    return {"status": "error", "ename": type(err).__name__, "evalue": str(err)[:2000]}


def _run_cell(shell, code: str, timeout: float) -> dict:
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = shell.run_cell(code, store_history=False, silent=False)
        error = result.error_in_exec or result.error_before_exec
    except BaseException as err:       # a CellTimeout outside the cell's own try blocks
        error = err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return _describe(error)


def _run_probe(shell, code: str, timeout: float) -> dict:
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        namespace = dict(shell.user_ns)
        exec(compile(code, "<hidden test>", "exec"), namespace)
        if "probe" not in namespace:
            return {"status": "error", "ename": "NameError", "evalue": "the probe did not bind `probe`"}
        text = encode(namespace["probe"])
    except BaseException as err:
        return _describe(err)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"status": "ok", "probe": text}


def main(argv: list[str]) -> int:
    read_fd, write_fd = int(argv[0]), int(argv[1])
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="NoColor")
    _write(write_fd, {"status": "ready"})
    while True:
        message = _read(read_fd)
        if message is None:               # the grader is done: exit at once (a tmpfs holds nothing to keep;
            os._exit(0)                   # Python's and JAX's clean-up took about a second of the grader's)
        run = _run_cell if message.get("op") == "run" else _run_probe
        try:
            answer = run(shell, message["code"], float(message["timeout"]))
        except BaseException as err:          # the student's code broke something the runner uses
            answer = _describe(err)
        _write(write_fd, answer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
