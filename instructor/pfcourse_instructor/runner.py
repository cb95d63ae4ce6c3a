"""A Jupyter kernel that survives the code it runs: time limits, interrupts, restarts and replay.

:class:`KernelSession` runs code one cell at a time in a fresh IPython kernel (nbclient). A cell
that runs past its time limit is interrupted; if the kernel does not come back (the code ignores
interrupts), or if the code kills the kernel (``os._exit``, a segfault), the kernel is restarted and
every cell that had succeeded is replayed, so the cells after it still run in the state they
expect. Used by the CI execution of ``notebooks/`` and of the chapters (the grader runs submissions in
:mod:`.sandbox` instead).

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import nbformat

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Outcome:
    """What one cell did: ``status`` is ``ok``, ``error``, ``timeout`` or ``crashed``."""

    status: str
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    seconds: float = 0.0
    outputs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self, limit: int = 300) -> str:
        if self.status == "ok":
            return "ok"
        if self.status == "timeout":
            return f"ran over the {self.evalue} s time limit and was stopped"
        if self.status == "crashed":
            return "the kernel died (the code crashed Python); it was restarted"
        text = f"{self.ename}: {self.evalue}".strip()
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def stdout(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs if o.get("output_type") == "stream")


class KernelSession:
    """Run code cells in a fresh kernel with a time limit per cell.

    Args:
        cell_timeout: seconds a cell may run before it is interrupted (and, if needed, the kernel
            restarted).
        cwd: working directory of the kernel (default: a new temporary directory).
        max_restarts: restarts allowed before :meth:`run` gives up with status ``crashed``.
        env: extra environment variables for the kernel.
    """

    def __init__(self, cell_timeout: float = 120, cwd: str | None = None, max_restarts: int = 5,
                 env: dict[str, str] | None = None):
        self.cell_timeout = cell_timeout
        self._own_cwd = cwd is None             # a folder of our own, removed by close()
        self.cwd = cwd or tempfile.mkdtemp(prefix="pfcourse-kernel-")
        self.max_restarts = max_restarts
        self.restarts = 0
        self.env = env or {}
        self._history: list[str] = []         # sources that ran without error, for replay
        self._client = None
        self._context = None
        self._start()

    def _start(self) -> None:
        from nbclient import NotebookClient

        env = {**os.environ, "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1", **self.env}
        self._client = NotebookClient(
            nbformat.v4.new_notebook(), timeout=int(max(1, self.cell_timeout)), kernel_name="python3",
            allow_errors=False, interrupt_on_timeout=False, shutdown_kernel="immediate",
            resources={"metadata": {"path": self.cwd}}, iopub_timeout=10)
        self._context = self._client.setup_kernel(env=env, cwd=self.cwd)
        self._context.__enter__()

    def close(self) -> None:
        if self._context is not None:
            try:
                self._context.__exit__(None, None, None)
            except Exception:       # the kernel may already be gone
                pass
            self._context = None

    def __del__(self):
        if getattr(self, "_own_cwd", False):
            shutil.rmtree(self.cwd, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if self._own_cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)

    def _execute(self, source: str, timeout: float) -> Outcome:
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        client = self._client
        client.timeout = int(max(1, timeout))
        cell = nbformat.v4.new_code_cell(source)
        client.nb.cells.append(cell)
        start = time.monotonic()
        try:
            client.execute_cell(cell, len(client.nb.cells) - 1)
        except CellExecutionError as err:
            return Outcome("error", err.ename, str(err.evalue), ANSI.sub("", str(err.traceback)),
                           time.monotonic() - start, list(cell.get("outputs", [])))
        except CellTimeoutError:
            return Outcome("timeout", "TimeoutError", f"{timeout:g}", "", time.monotonic() - start,
                           list(cell.get("outputs", [])))
        except DeadKernelError:
            return Outcome("crashed", "DeadKernelError", "the kernel died", "", time.monotonic() - start,
                           list(cell.get("outputs", [])))
        return Outcome("ok", seconds=time.monotonic() - start, outputs=list(cell.get("outputs", [])))

    def run(self, source: str, *, timeout: float | None = None, remember: bool = True) -> Outcome:
        """Run ``source``; after a timeout or a crash the kernel is usable again (state replayed).

        ``remember=False`` runs code whose effects need not be replayed (tests, probes).
        """
        timeout = self.cell_timeout if timeout is None else timeout
        if self._context is None:
            return Outcome("crashed", "DeadKernelError", "too many kernel restarts")
        outcome = self._execute(source, timeout)
        if outcome.status == "timeout":
            self._recover_after_timeout()
        elif outcome.status == "crashed":
            self._restart()
        elif outcome.ok and remember:
            self._history.append(source)
        return outcome

    def _recover_after_timeout(self) -> None:
        """Interrupt; if the kernel answers a probe within a few seconds keep it, else restart."""
        from jupyter_core.utils import run_sync

        try:
            run_sync(self._client.km.interrupt_kernel)()     # an async kernel manager
        except Exception:
            pass
        probe = self._execute("pass", timeout=10)
        if probe.status != "ok":
            self._restart()

    def _restart(self) -> None:
        self.close()
        self.restarts += 1
        if self.restarts > self.max_restarts:
            return
        self._start()
        for source in self._history:        # replay the state the later cells expect
            self._execute(source, self.cell_timeout)


def run_notebook(nb: nbformat.NotebookNode, *, cell_timeout: float = 600, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> list[tuple[int, Outcome]]:
    """Execute every code cell of ``nb`` top to bottom in a fresh kernel; return each outcome.

    Unlike ``nbclient.execute`` it goes on after an error, so one run reports every failing cell.
    Outputs are written into ``nb``.
    """
    results = []
    with KernelSession(cell_timeout=cell_timeout, cwd=cwd, env=env, max_restarts=0) as kernel:
        for number, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            outcome = kernel.run(cell.source)
            cell["outputs"] = outcome.outputs
            results.append((number, outcome))
            if outcome.status == "crashed":
                break
    return results
