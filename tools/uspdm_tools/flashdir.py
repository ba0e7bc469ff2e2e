"""The simulated board's flash folder on the host (`--flash DIR`).

The folder belongs to the board: it may hold only what a board writes (the
`uspdm/` folder of regular files) and our lock file.  Anything else (dot
files, a `.git`, symlinks, other files) means the user pointed --flash at a
folder that is not a board's, and it is refused with a clear message instead
of being mirrored (the mirror in tools/mpy/mpcore.mjs also only ever deletes
what the board itself deleted).

One user at a time: `uspdm sim` and `uspdm provision --flash` hold an
exclusive lock (flock on DIR/.uspdm-flash.lock, which names the holder's PID)
for as long as they use the folder; a second user is refused with the
holder's PID instead of silently undoing the other's writes.
"""
import errno
import fcntl
import os
import stat

LOCK_NAME = ".uspdm-flash.lock"
BOARD_DIR = "uspdm"


class FlashDirError(Exception):
    """A one-line, user-facing reason the folder cannot be used."""


def _foreign(root):
    """Paths (relative to root) that a board never writes: the first few."""
    bad = []
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if name == LOCK_NAME and stat.S_ISREG(os.lstat(p).st_mode):
            continue
        if name != BOARD_DIR or os.path.islink(p) or not os.path.isdir(p):
            bad.append(name)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            for n in dirnames + filenames:
                q = os.path.join(dirpath, n)
                st = os.lstat(q)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                    bad.append(os.path.relpath(q, root))
        if len(bad) > 3:
            break
    return bad


def check(path):
    """Raise FlashDirError unless `path` can be the board's flash folder
    (missing, empty, or holding only the board's own files)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FlashDirError("--flash %s is not a folder; give a new or empty folder (it is created)" % path)
    if os.path.islink(path):
        raise FlashDirError("--flash %s is a symlink; give the folder itself" % path)
    if not os.path.exists(path):
        return
    try:
        bad = _foreign(path)
    except OSError as e:
        raise FlashDirError("cannot read the flash folder %s: %s" % (path, e.strerror or e))
    if bad:
        raise FlashDirError(
            "--flash %s holds files that are not the simulated board's (%s%s); the board's folder may "
            "only hold its own %s/ files: give a new or empty folder" % (
                path, ", ".join(bad[:3]), ", ..." if len(bad) > 3 else "", BOARD_DIR))


class FlashLock:
    """Exclusive use of a flash folder by this process (released by close())."""

    def __init__(self, path, what):
        self.path = os.path.abspath(path)
        self.fd = None
        check(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise FlashDirError("cannot create the flash folder %s: %s" % (self.path, e.strerror or e))
        lock = os.path.join(self.path, LOCK_NAME)
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
            except OSError as e:
                raise FlashDirError("cannot lock the flash folder %s: %s" % (self.path, e.strerror or e))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = ""
                try:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                except OSError:
                    pass
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FlashDirError("cannot lock the flash folder %s: %s" % (self.path, e.strerror or e))
                raise FlashDirError(
                    "the flash folder %s is in use by %s; stop it first (a running simulated board keeps "
                    "its own copy and would overwrite changes made beside it)" % (
                        self.path, holder or "another process"))
            # the holder may have removed the file between our open and flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%s (PID %d)\n" % (what, os.getpid())).encode(), 0)
        self.fd = fd
        self.lock_path = lock

    def close(self):
        if self.fd is not None:
            try:
                os.unlink(self.lock_path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
