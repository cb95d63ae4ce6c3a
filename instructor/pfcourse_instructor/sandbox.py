"""The sandbox a submission runs in, and the grader's handle on it.

:class:`Sandbox` (grader side) starts the student's process (:mod:`.student`) inside bubblewrap
(``bwrap``, Debian's ``bubblewrap``, the sandbox Flatpak uses), talks to it over two pipes, gives
each cell a time limit, restarts it (and replays the cells that had run) after a crash or a
time-out, and at the end kills everything it started (:func:`kill_processes`).

The file system is an **allow-list** (:func:`bwrap_command`): an empty root (read-only) holding
read-only binds of ``/usr`` (``/lib*``, ``/bin`` as on the host), ``/etc/ld.so.cache`` and
``/etc/localtime``, the Python prefix and the virtual environment, and the ``pfcourse`` and
``pfcourse_instructor`` packages; a fresh ``/proc`` (new PID namespace) and a minimal ``/dev``;
size-limited private tmpfs for the working folder (``/home/student``, holding its own copy of the
notebook), ``/tmp`` and ``/dev/shm``; empty ``/run``, ``/var/run`` and ``/var/tmp``. Nothing else
of the host exists inside: not the repository's ``coursework/`` or ``.git``, not the submissions,
the output folder, ``$HOME``, another checkout, or a host service's Unix socket (the one addition:
the class's JAX compilation cache at ``/jit-cache``, read-only, filled by the reference solution's
run, see :func:`.grading._warm_jit_cache`). The tmpfs vanish
with the mount namespace, so a kill leaves nothing on disk. Network, PID, IPC, UTS and cgroup
namespaces are new (no network at all; abstract Unix sockets belong to the network namespace);
``--die-with-parent`` and ``--new-session``. As root the student runs as an unused user id (so
``RLIMIT_NPROC`` counts its processes alone) with ``no_new_privs``; otherwise bwrap makes a user
namespace (``--disable-userns``: none nested). Resource limits (:class:`Limits`) are set with
``prlimit`` on bwrap and inherited.

Seccomp and Landlock: the machine this was written on (Debian 12, Linux 6.18) has both (seccomp
filters; Landlock ABI 7). The sandbox uses neither: the allow-listed mount namespace already hides
every file and file-system socket, and the network namespace every abstract socket; a seccomp
filter would need a compiled BPF program (``bwrap --seccomp FD``) that this package does not ship.

:func:`require_sandbox` raises :class:`SandboxUnavailable`, naming the package, where ``bwrap`` is
missing or cannot create namespaces (``python3 dev.py test`` installs it as root).
``coursework/README.md`` says what this guards against and what it does not.

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .runner import Outcome
from .student import HEADER

GRACE = 5.0                     # seconds a cell past its time limit has to answer before it is killed
START_TIMEOUT = 180.0           # seconds for the student's process to start (imports IPython)
MAX_ANSWER = 80 * 2**20         # bytes of one answer (a probe) read from the student's process
HOME = "/home/student"          # the working folder inside: a tmpfs holding the notebook's copy
JIT_CACHE = "/jit-cache"        # where a JAX compilation cache is bound (see grading.warm_jit_cache)
KEPT_ENV = ("LANG", "LC_ALL", "TZ", "JAX_PLATFORMS", "JAX_ENABLE_X64", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
INSTALL = ("the grader's sandbox needs bubblewrap (`bwrap`, Debian/Ubuntu package `bubblewrap`, "
           "Fedora `bubblewrap`): install it (`sudo apt-get install bubblewrap`; `python3 dev.py test` "
           "does so when run as root) and grade again")


class SandboxUnavailable(OSError):
    """bwrap is missing, or cannot create the sandbox's namespaces on this machine."""


@dataclass
class Limits:
    """What the student's process may use: ``memory_gb`` 0 means no memory limit (CUDA needs that)."""

    memory_gb: float = 8.0
    processes: int = 512            # processes and threads (RLIMIT_NPROC counts both)
    cpu_seconds: int = 3600
    file_mb: int = 1024             # one file (RLIMIT_FSIZE), and the working folder's tmpfs
    tmp_mb: int = 512               # /tmp's and /dev/shm's tmpfs each


# ---------------------------------------------------------------- the bwrap command


def _allowed() -> list[Path]:
    """What the student's Python needs from the host: its prefixes and the two packages."""
    import pfcourse

    here = Path(__file__).resolve().parent
    wanted = [Path(sys.base_prefix), Path(sys.prefix), Path(pfcourse.__file__).resolve().parent, here]
    return sorted({p.resolve() for p in wanted}, key=lambda p: len(p.parts))


def _binds(paths: list[Path]) -> list[str]:
    """bwrap arguments: the system folders, then each path read-only, its parents made searchable."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    args += ["--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/var"]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    made: set[Path] = set()
    for path in paths:
        if any(p == path or p in path.parents for p in made | {Path("/usr")}):
            continue          # inside a folder bound already
        for parent in reversed(path.parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(path), str(path)]
        made.add(path)
    return args


def bwrap_command(limits: Limits, uid: int | None, inner: list[str], notebook_fd: int | None = None,
                  jit_cache: tuple[str, bool] | None = None) -> list[str]:
    """The command that runs ``inner`` in the sandbox (see the module's docstring).

    ``uid``: the unused user id it becomes (the grader is root), or None (a user namespace).
    ``notebook_fd``: a file descriptor whose contents become ``HOME/submission.ipynb``.
    ``jit_cache``: (folder, writable): a JAX compilation cache bound at :data:`JIT_CACHE`.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(INSTALL)
    nproc = limits.processes if uid is not None else limits.processes + _user_tasks()
    rlimits = [f"--nproc={nproc}", f"--cpu={limits.cpu_seconds}", "--core=0",
               f"--fsize={limits.file_mb * 2**20}"]
    if limits.memory_gb > 0:
        rlimits.append(f"--as={int(limits.memory_gb * 2**30)}")
    spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if uid is None:
        spaces += ["--unshare-user", "--disable-userns"]
        drop = []
    else:          # root: no user namespace (it would map the student to root); setpriv drops to uid
        spaces += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--"]
    tmp = [f"{limits.tmp_mb * 2**20}", f"{limits.file_mb * 2**20}"]
    files = [] if notebook_fd is None else ["--perms", "0644", "--file", str(notebook_fd), f"{HOME}/submission.ipynb"]
    if jit_cache:
        files += ["--bind" if jit_cache[1] else "--ro-bind", jit_cache[0], JIT_CACHE]
    # The private mounts first, the allowed binds after: bwrap mounts in order, so a checkout or a
    # virtual environment under /tmp (a CI clone, say) is bound on top of the private /tmp, not hidden.
    return ["prlimit", *rlimits, "--", bwrap, *spaces, "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", tmp[0], "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", tmp[0], "--tmpfs", "/tmp",
            "--perms", "1777", "--size", tmp[1], "--tmpfs", HOME, *files,
            "--dir", "/run", "--dir", "/var/tmp", "--symlink", "../run", "/var/run",
            *_binds(_allowed()), "--remount-ro", "/", "--chdir", HOME, *drop, *inner]


def student_uid() -> int | None:
    """The unused user id a root grader's student process runs as (None when not root)."""
    return 100000 + os.getpid() % 1000000 if os.geteuid() == 0 else None


def _user_tasks() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them too at bwrap's first fork."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            pass
    return count


_CHECKED: dict[str, str] = {}


def require_sandbox() -> None:
    """Raise :class:`SandboxUnavailable` (saying what to do) unless bwrap can build the sandbox here."""
    if "error" not in _CHECKED:
        try:
            run = subprocess.run(bwrap_command(Limits(), student_uid(), ["true"]), capture_output=True,
                                 text=True, timeout=60)
            _CHECKED["error"] = "" if run.returncode == 0 else run.stderr.strip()[-400:] or f"exit {run.returncode}"
        except SandboxUnavailable as err:
            _CHECKED["error"] = str(err)
        except (OSError, subprocess.TimeoutExpired) as err:
            _CHECKED["error"] = str(err)
    if _CHECKED["error"] == INSTALL:
        raise SandboxUnavailable(INSTALL)
    if _CHECKED["error"]:
        raise SandboxUnavailable(
            f"bubblewrap (`bwrap`) cannot create the sandbox's namespaces on this machine: {_CHECKED['error']}. "
            "Unprivileged user namespaces must be allowed (Ubuntu 24.04: `sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0`; a container: run it with them allowed), "
            "or grade as root")


# ---------------------------------------------------------------- grader side


@dataclass
class Sandbox:
    """A student's process in the sandbox; ``run`` cells, ``probe`` hidden tests, then ``close``.

    Args:
        notebook: the submission's bytes (its copy in the working folder).
        cell_timeout: seconds per cell and per probe.
        limits: its resource limits; ``max_restarts``: restarts before it is given up.
    """

    notebook: bytes = b""
    cell_timeout: float = 120
    jit_cache: tuple[str, bool] | None = None
    limits: Limits = field(default_factory=Limits)
    max_restarts: int = 5
    restarts: int = 0
    sessions: list[int] = field(default_factory=list)

    def __post_init__(self):
        require_sandbox()
        self._history: list[tuple[str, float | None]] = []
        self._proc: subprocess.Popen | None = None
        self._start()

    def _env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
        env.update(HOME=HOME, TMPDIR="/tmp", MPLBACKEND="Agg", MPLCONFIGDIR=f"{HOME}/.matplotlib",
                   PYTHONDONTWRITEBYTECODE="1", PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
                   LANG=env.get("LANG", "C.UTF-8"))
        if self.jit_cache:
            env.update(JAX_COMPILATION_CACHE_DIR=JIT_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES="none")
        return env

    def _start(self) -> None:
        to_child, from_grader = os.pipe()[::-1]
        from_child, to_grader = os.pipe()
        notebook = os.memfd_create("submission")
        os.write(notebook, self.notebook)
        os.lseek(notebook, 0, os.SEEK_SET)
        inner = [sys.executable, "-I", "-m", "pfcourse_instructor.student", str(from_grader), str(to_grader)]
        cmd = bwrap_command(self.limits, student_uid(), inner, notebook, self.jit_cache)
        self._proc = subprocess.Popen(cmd, pass_fds=(from_grader, to_grader, notebook), start_new_session=True,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=self._env())
        for fd in (from_grader, to_grader, notebook):
            os.close(fd)
        self.sessions.append(self._proc.pid)
        self._send, self._receive = to_child, from_child
        os.set_blocking(self._send, False)
        ready = self._answer(START_TIMEOUT)
        if not ready or ready.get("status") != "ready":
            proc = self._proc
            self._kill()
            raise RuntimeError(f"the sandbox did not start: {_tail(proc)}")

    def _answer(self, timeout: float) -> dict | None:
        """The next answer of the student's process; None if it died or did not answer in time."""
        deadline = time.monotonic() + timeout
        data = b""
        need = HEADER.size
        while len(data) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._receive], [], [], left)[0]:
                self.timed_out = True
                return None
            chunk = os.read(self._receive, min(need - len(data), 1 << 20))
            if not chunk:
                self.timed_out = False
                return None
            data += chunk
            if len(data) == HEADER.size and need == HEADER.size:
                need += HEADER.unpack(data)[0]
                if need > MAX_ANSWER:
                    self.timed_out = False
                    return None
        try:
            answer = json.loads(data[HEADER.size:])
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def _request(self, message: dict, timeout: float) -> dict | None:
        body = json.dumps(message).encode()
        data = HEADER.pack(len(body)) + body
        deadline = time.monotonic() + timeout + GRACE
        try:
            while data:
                if not select.select([], [self._send], [], max(0.0, deadline - time.monotonic()))[1]:
                    self.timed_out = True
                    return None
                data = data[os.write(self._send, data[:65536]):]
        except OSError:                     # the process is gone (broken pipe)
            self.timed_out = False
            return None
        return self._answer(max(0.0, deadline - time.monotonic()))

    def _call(self, op: str, code: str, timeout: float | None) -> tuple[Outcome, dict]:
        timeout = self.cell_timeout if timeout is None else timeout
        if self._proc is None:
            return Outcome("crashed", "DeadKernelError", "too many restarts"), {}
        start = time.monotonic()
        answer = self._request({"op": op, "code": code, "timeout": timeout}, timeout)
        seconds = time.monotonic() - start
        if answer is None:
            status = "timeout" if self.timed_out else "crashed"
            self._restart()
            return Outcome(status, "TimeoutError" if status == "timeout" else "DeadKernelError",
                           f"{timeout:g}", seconds=seconds), {}
        status = answer.get("status")
        if status == "timeout":
            self._restart()        # kills whatever the cell left running (a fork loop, a thread)
            return Outcome("timeout", "TimeoutError", f"{timeout:g}", seconds=seconds), answer
        if status == "ok":
            return Outcome("ok", seconds=seconds), answer
        return Outcome("error", str(answer.get("ename", "Error"))[:100], str(answer.get("evalue", ""))[:2000],
                       seconds=seconds), answer

    def run(self, code: str, *, timeout: float | None = None, remember: bool = True) -> Outcome:
        """Run a cell; after a time-out or a crash the process is restarted and the state replayed."""
        outcome, _ = self._call("run", code, timeout)
        if outcome.ok and remember:
            self._history.append((code, timeout))
        return outcome

    def probe(self, code: str, *, timeout: float | None = None) -> tuple[Outcome, str | None]:
        """Run the probe part of a hidden test; return its outcome and the JSON text of ``probe``."""
        outcome, answer = self._call("probe", code, timeout)
        text = answer.get("probe") if outcome.ok else None
        if outcome.ok and not isinstance(text, str):
            return Outcome("error", "ProtocolError", "no probe came back"), None
        return outcome, text

    def _kill(self) -> None:
        if self._proc is not None:
            kill_processes(self.sessions, os.getpid())
            for fd in (self._send, self._receive):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._proc = None

    def _restart(self) -> None:
        self._kill()
        self.restarts += 1
        if self.restarts > self.max_restarts:
            return
        self._start()
        for code, timeout in self._history:          # replay the state the later cells expect
            timeout = self.cell_timeout if timeout is None else timeout
            self._request({"op": "run", "code": code, "timeout": timeout}, timeout)

    def close(self) -> None:
        """End the student's process (its pipe closed, it exits: bwrap reaps it and its CPU time counts),
        then kill whatever is left of it and everything it started (checked in /proc)."""
        if self._proc is not None:
            os.close(self._send)
            self._send = -1
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tail(proc: subprocess.Popen) -> str:
    """The end of what a dead sandbox wrote to stderr (bwrap's own errors; the student's go to /dev/null)."""
    try:
        return (proc.stderr.read(20000) or b"").decode(errors="replace").strip()[-600:]
    except (OSError, ValueError):
        return ""


# ---------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, int, int, str]]:
    """Every process in /proc: pid -> (ppid, process group, session, state)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]), fields[0])
    return table


def stragglers(sessions: list[int], ancestor: int) -> list[int]:
    """Live processes in one of ``sessions`` (or their process groups) or below ``ancestor``."""
    table = _processes()
    below = {ancestor}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _, _) in table.items():
            if ppid in below and pid not in below:
                below.add(pid)
                changed = True
    return [pid for pid, (_, group, session, state) in table.items()
            if pid != ancestor and state not in "ZX" and pid != os.getpid()
            and (pid in below or session in sessions or group in sessions)]


def kill_processes(sessions: list[int], ancestor: int, *, patience: float = 10.0) -> list[int]:
    """SIGKILL the sessions and every descendant of ``ancestor`` until none is left; return the last seen."""
    for session in sessions:
        try:
            os.killpg(session, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + patience
    left = stragglers(sessions, ancestor)
    while left and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        reap()
        time.sleep(0.05)
        left = stragglers(sessions, ancestor)
    reap()
    return left


def reap() -> None:
    """Collect the exit status of dead children (orphans adopted by a subreaper included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def become_subreaper() -> None:
    """Adopt orphans (a double fork cannot escape), and keep our /proc files from other processes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)          # PR_SET_CHILD_SUBREAPER
    libc.prctl(4, 0, 0, 0, 0)           # PR_SET_DUMPABLE 0: /proc/<pid>/{environ,fd,mem} and ptrace closed
