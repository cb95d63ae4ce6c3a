"""The grader's sandbox is an allow-list (issue 25): what a student's process sees, reaches and leaves.

One sandbox (bubblewrap, as the grader starts it) runs one cell that looks around from the inside
and sends back what it found as its probe; the host side plants what it must not find: a file in
the host's /tmp and /var/tmp, Unix sockets listening in /var/tmp and /run and on an abstract name,
and the repository's hidden tests and .git are where they always are. A second sandbox is killed
while it holds files, and nothing of it may be left on the host.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from pfcourse_instructor import sandbox as sandbox_module
from pfcourse_instructor.sandbox import HOME, Limits, Sandbox, SandboxUnavailable, stragglers

ROOT = Path(__file__).resolve().parents[1]
MARK = f"pfcourse-allowlist-{uuid.uuid4().hex[:8]}"
MB = 2**20

LOOK = r'''
import json, os, socket
def _connect(address, family=socket.AF_UNIX):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(address)
        return "connected"
    except OSError as err:
        return type(err).__name__
    finally:
        s.close()
def _writable(folder):
    try:
        with open(os.path.join(folder, "w"), "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
def _fill(folder, chunk_mb, count):
    """How many files of chunk_mb MB fit in folder before the file system is full."""
    for n in range(count):
        try:
            with open(os.path.join(folder, f"fill{n}"), "wb") as f:
                f.write(b"\0" * (chunk_mb << 20))
        except OSError as err:
            return n, err.errno
    return count, 0
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
seen = {
    "root": sorted(os.listdir("/")), "etc": sorted(os.listdir("/etc")), "uid": os.getuid(),
    "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
    "exists": {p: os.path.exists(p) for p in PATHS},
    "writable": {p: _writable(p) for p in ["/", "/usr", "/etc", "/run", "/var/tmp", "/tmp", "/dev/shm", HOME, VENV]},
    "sockets": {a: _connect(a) for a in SOCKETS}, "abstract": _connect(ABSTRACT),
    "tcp": _connect(("127.0.0.1", 9), socket.AF_INET),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "notebook": open(os.path.join(HOME, "submission.ipynb")).read(), "cwd": os.getcwd(),
    "fill_home": _fill(HOME, 3, 8), "fill_tmp": _fill("/tmp", 3, 8),
}
probe = {"seen": json.dumps(seen)}
'''


def _listen(address: str) -> socket.socket:
    """A Unix socket on the host, accepting and dropping connections (a host service)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(4)
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    return server


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    planted = [Path("/tmp") / MARK, Path("/var/tmp") / MARK]
    for path in planted:
        path.write_text("host file")
    sockets = [f"/var/tmp/{MARK}.sock", f"/run/{MARK}.sock"]
    servers = [_listen(address) for address in sockets]
    abstract = f"\0{MARK}"
    servers.append(_listen(abstract))
    paths = [str(p) for p in planted] + [str(ROOT / "coursework"), str(ROOT / ".git"), str(ROOT / "tests"),
                                         "/etc/shadow", "/etc/passwd", "/var/run"]
    code = (f"PATHS, SOCKETS, ABSTRACT = {paths!r}, {sockets!r}, {abstract!r}\n"
            f"HOME, VENV = {HOME!r}, {os.path.realpath(sys.prefix)!r}\n" + LOOK)
    try:
        with Sandbox(b'{"cells": []}', cell_timeout=60, limits=Limits(file_mb=8, tmp_mb=4)) as box:
            outcome, text = box.probe(code)
            assert outcome.ok, outcome.summary()
            grader = os.getpid()
    finally:
        for server in servers:
            server.close()
        for path in [*planted, *map(Path, sockets)]:
            path.unlink(missing_ok=True)
    return {**json.loads(json.loads(text)["__dict__"]["seen"]), "grader": grader, "paths": paths}


def test_only_the_allow_list_exists_inside(seen):
    """The host's /tmp and /var/tmp files, the hidden tests, .git, $HOME and /etc's secrets are absent."""
    bound = {p.parts[1] for p in sandbox_module._allowed()}       # the Python prefixes and the packages
    assert set(seen["root"]) <= {"usr", "lib", "lib32", "lib64", "bin", "sbin", "etc", "var", "run", "tmp", "dev",
                                 "proc", "home"} | bound, seen["root"]
    assert set(seen["etc"]) <= {"ld.so.cache", "localtime"}, seen["etc"]
    visible = [p for p, there in seen["exists"].items() if there and p != "/var/run"]
    assert not visible, f"the student's process sees {visible}"
    assert seen["notebook"] == '{"cells": []}' and seen["cwd"] == HOME


def test_only_its_private_tmpfs_are_writable(seen):
    assert seen["writable"] == {"/": False, "/usr": False, "/etc": False, "/run": False, "/var/tmp": False,
                                "/tmp": True, "/dev/shm": True, HOME: True,
                                os.path.realpath(sys.prefix): False}


def test_the_tmpfs_are_size_limited(seen):
    """8 MB for the working folder (file_mb) and 4 MB for /tmp: two 3 MB files fit, the third does not."""
    assert seen["fill_home"] == [2, 28], seen["fill_home"]       # 28: ENOSPC
    assert seen["fill_tmp"] == [1, 28], seen["fill_tmp"]


def test_no_socket_outside_and_no_network(seen):
    assert set(seen["sockets"].values()) == {"FileNotFoundError"}, seen["sockets"]
    assert seen["abstract"] == "ConnectionRefusedError", "abstract sockets belong to the network namespace"
    assert seen["tcp"] in ("ConnectionRefusedError", "OSError"), seen["tcp"]     # no interface but a down lo


def test_its_own_processes_and_no_privileges(seen):
    assert len(seen["processes"]) <= 3 and seen["grader"] not in seen["processes"], seen["processes"]
    assert seen["no_new_privs"] == "1" and int(seen["cap_eff"], 16) == 0
    if os.geteuid() == 0:
        assert seen["uid"] >= 100000, "a root grader runs students as an unused user id"


def test_a_killed_sandbox_leaves_nothing_behind():
    """Files written inside live in the sandbox's tmpfs: after a kill, neither they nor a process remain."""
    name = f"{MARK}-killed"
    box = Sandbox(b"{}", cell_timeout=30)
    outcome = box.run(f"import os, subprocess\nfor d in ['/tmp', '/dev/shm', os.getcwd()]:\n"
                      f"    open(os.path.join(d, {name!r}), 'w').write('x' * 1000)\n"
                      "subprocess.Popen(['sleep', '600'], start_new_session=True)")
    assert outcome.ok, outcome.summary()
    sessions = list(box.sessions)
    box.close()
    assert not stragglers(sessions, os.getpid())
    left = [str(p) for folder in ("/tmp", "/var/tmp", "/dev/shm") for p in Path(folder).rglob(name)]
    assert not left, f"left on the host: {left}"


def test_a_missing_bwrap_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox_module, "_CHECKED", {})
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*apt-get install bubblewrap"):
        sandbox_module.require_sandbox()


def test_a_bwrap_that_cannot_make_namespaces_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: str(fake))
    monkeypatch.setattr(sandbox_module, "_CHECKED", {})
    with pytest.raises(SandboxUnavailable, match="cannot create the sandbox's namespaces.*No permissions"):
        sandbox_module.require_sandbox()
