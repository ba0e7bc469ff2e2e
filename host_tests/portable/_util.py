"""Helpers for portable tests (they run on CPython and inside MicroPython)."""
import sys

IS_MPY = sys.implementation.name == "micropython"

if IS_MPY:
    VECTORS = "/vectors"
else:
    import os

    VECTORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors")


def vector_path(name):
    return VECTORS + "/" + name


def raises(exc, fn, *args, **kw):
    """Assert that fn(*args, **kw) raises exc; return the exception."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (getattr(exc, "__name__", exc), fn))


def unhex(s):
    s = s.strip()
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def read_blocks(name):
    """Parse a CAVP-style vector file: 'key = value' lines, blocks separated by
    blank lines; '#' comments and '[section]' lines are passed through as
    the key '_section' of the following blocks.  Yields dicts."""
    section = ""
    cur = {}
    with open(vector_path(name)) as f:
        for line in f:
            line = line.strip()
            if not line:
                if cur:
                    cur["_section"] = section
                    yield cur
                    cur = {}
                continue
            if line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if "=" in line:
                k, v = line.split("=", 1)
                cur[k.strip()] = v.strip()
    if cur:
        cur["_section"] = section
        yield cur


class scratch_dir:
    """A fresh folder for one test, removed afterwards (nothing is created at
    import and nothing is left in the temp directory):
        with scratch_dir() as d: ..."""

    def __init__(self, name="uspdm-test"):
        self.name = name
        self.path = None

    def __enter__(self):
        if IS_MPY:
            import os

            self.path = "/tmp/" + self.name
            _rmtree(self.path)
            try:
                os.mkdir("/tmp")
            except OSError:
                pass
            os.mkdir(self.path)
        else:
            import tempfile

            self.path = tempfile.mkdtemp(prefix=self.name + "-")
        return self.path

    def __exit__(self, *exc):
        _rmtree(self.path)


def _rmtree(path):
    import os

    try:
        names = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for n in names:
        _rmtree(path + "/" + n)
    try:
        os.rmdir(path)
    except OSError:
        pass
