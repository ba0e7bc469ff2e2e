"""Run Python code on real MicroPython (the WebAssembly build) under Node.

    with MicroPython() as mp:
        r = mp.run("import uspdm.crypto.sha2 as s; print(s.sha384(b'abc').digest().hex())")
        r.out, r.alloc, r.live

`lib/` is importable inside.  `mounts` copies more host folders into the
interpreter's in-memory filesystem (``[("host_tests/portable", "/tests")]``);
`flash=DIR` mirrors a host folder at /flash (written back after every run:
the simulated board's persistent storage); `board="sim"` makes that board's
`board` module importable.
A failing snippet raises MicroPythonError carrying the MicroPython traceback;
the interpreter stays usable afterwards.
"""
import json
import os
import select
import shutil
import subprocess
import time

from .paths import MPY_RUNNER, NODE_MODULES, REPO_ROOT


class MicroPythonError(Exception):
    def __init__(self, traceback, out=""):
        Exception.__init__(self, traceback)
        self.traceback = traceback
        self.out = out


class MicroPythonUnavailable(Exception):
    pass


class Result:
    def __init__(self, d):
        self.out = d.get("out", "")
        self.alloc = d.get("alloc", 0)
        self.live = d.get("live", 0)
        self.exit = d.get("exit")   # N when the code called sys.exit(N), else None

    def __repr__(self):
        return "Result(out=%r, alloc=%d, live=%d)" % (self.out, self.alloc, self.live)


def node_path():
    node = shutil.which("node")
    if not node:
        raise MicroPythonUnavailable("node is not installed (Node 20+ is needed for the MicroPython runner)")
    if not os.path.isdir(os.path.join(NODE_MODULES, "@micropython")):
        raise MicroPythonUnavailable("MicroPython (wasm) is not installed: run `make setup` (npm ci)")
    return node


class MicroPython:
    def __init__(self, mounts=(), heap=8 * 1024 * 1024, root=REPO_ROOT, start_timeout=30.0, flash=None,
                 board=None):
        cmd = [node_path(), MPY_RUNNER, "--root", root, "--heap", str(heap)]
        if board:
            mounts = list(mounts) + [("boards/" + board, "/board")]
        for src, dst in mounts:
            cmd += ["--mount", "%s:%s" % (src, dst)]
        if flash:
            cmd += ["--flash", os.path.abspath(flash)]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root
        )
        self._buf = b""
        self._id = 0
        hello = self._read_line(start_timeout)
        if not hello.get("ready"):
            raise MicroPythonUnavailable("runner did not start: %r" % (hello,))
        self.version = hello.get("version")
        if board:
            self.run("import sys\nif '/board' not in sys.path: sys.path.insert(0, '/board')\n")

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise TimeoutError("MicroPython runner did not answer within %.0f s" % timeout)
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    raise MicroPythonUnavailable("MicroPython runner exited: " + err[-2000:])
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, code, measure=False, timeout=300.0):
        """Run `code` in a fresh namespace; return a Result or raise MicroPythonError."""
        self._id += 1
        req = json.dumps({"id": self._id, "code": code, "measure": bool(measure)}) + "\n"
        self._proc.stdin.write(req.encode())
        self._proc.stdin.flush()
        while True:
            d = self._read_line(timeout)
            if d.get("id") == self._id:
                break
        if not d.get("ok"):
            raise MicroPythonError(d.get("error") or "unknown error", d.get("out", ""))
        return Result(d)

    def close(self):
        p = self._proc
        if p and p.poll() is None:
            try:
                p.stdin.close()
            except Exception:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdout, p.stderr):
            try:
                f.close()
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
