"""Persistent key/value storage on the board's filesystem (flash).

Names are relative paths like "uspdm/key_p384.bin".  `on_write` is called
after every change (the simulated board uses it to mirror its in-memory
flash to a host folder).

Layout used by uspdm (under the storage root):
  uspdm/eid.bin                MCTP EID, 1 byte
  uspdm/key_<alg>.bin          device private key (alg: p384, p256), raw big-endian scalar
  uspdm/slot<N>_<alg>.der      certificate chain for slot N: DER certificates concatenated, root first, leaf last
                               (enrolment writes them through uspdm.enroll: .wip/.cmt/.pnd staging names, power-fail safe)
  uspdm/csr<T>.bin             GET_CSR waiting for a reset (CERT_INSTALL_RESET flow), tracking tag T
  uspdm/psk_<hint-hex>.bin     pre-shared keys, by hint
  uspdm/i2c_addr.bin           I2C address, 1 byte
"""
import os

from uspdm.compat import read_into_from


def _isdir(path):
    try:
        return (os.stat(path)[0] & 0x4000) != 0
    except OSError:
        return False


class FileStorage:
    def __init__(self, root="/", on_write=None):
        root = root.rstrip("/")
        self.root = root
        self.on_write = on_write

    def _path(self, name):
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError("bad storage name")
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def read_into(self, name, offset, buf):
        """Read bytes of `name` from `offset` into buf (a writable buffer or
        memoryview), without reading the whole file: the number read (less than
        len(buf) at the end of the file), or None when it does not exist."""
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.readinto(buf) or 0
        except OSError:
            return None

    def exists(self, name):
        try:
            os.stat(self._path(name))
            return True
        except OSError:
            return False

    def _mkdirs(self, path):
        parts = path.split("/")[:-1]
        cur = ""
        for p in parts:
            if not p:
                continue
            cur = cur + "/" + p if (cur or path.startswith("/")) else p
            if not _isdir(cur):
                try:
                    os.mkdir(cur)
                except OSError:
                    pass

    def write(self, name, data):
        path = self._path(name)
        self._mkdirs(path)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)
        if self.on_write:
            self.on_write()

    def create(self, name, data):
        """Write a file in place (no rename): for callers that stage and
        commit themselves (uspdm.enroll)."""
        path = self._path(name)
        self._mkdirs(path)
        with open(path, "wb") as f:
            f.write(data)
        if self.on_write:
            self.on_write()

    def rename(self, old, new):
        """Atomic rename to a name that does not exist (uspdm.enroll never renames onto a file)."""
        os.rename(self._path(old), self._path(new))
        if self.on_write:
            self.on_write()

    def delete(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            return False
        if self.on_write:
            self.on_write()
        return True

    def list(self, folder):
        try:
            return sorted(os.listdir(self._path(folder)))
        except OSError:
            return []


class MemoryStorage:
    """Volatile storage (tests, boards without a filesystem)."""

    def __init__(self):
        self.files = {}
        self.on_write = None

    def read(self, name):
        return self.files.get(name)

    def read_into(self, name, offset, buf):
        return read_into_from(self.read(name), offset, buf)

    def exists(self, name):
        return name in self.files

    def write(self, name, data):
        self.files[name] = bytes(data)

    def create(self, name, data):
        self.files[name] = bytes(data)

    def rename(self, old, new):
        if old not in self.files or new in self.files:
            raise OSError("rename")
        self.files[new] = self.files.pop(old)

    def delete(self, name):
        return self.files.pop(name, None) is not None

    def list(self, folder):
        pre = folder.rstrip("/") + "/"
        return sorted(k[len(pre):] for k in self.files if k.startswith(pre) and "/" not in k[len(pre):])
