"""`uspdm sim --m0` with the stock load (the default): remount the ROMFS at
/rom behind a file object without the buffer protocol, so that importing a
module copies its bytecode, constants and qstrs into the heap, as importing
from LittleFS does on a stock RP2040 after `mpremote cp`.  Without it
(--m0-load rom) bytecode runs in place from flash, as after a ROMFS deploy.
Imported once by the host's boot script, before anything else."""
import io
import vfs


class _File(io.IOBase):
    def __init__(self, f):
        self._f = f

    def readinto(self, b):
        return self._f.readinto(b)

    def read(self, *a):
        return self._f.read(*a)

    def readline(self, *a):
        return self._f.readline(*a)

    def seek(self, *a):
        return self._f.seek(*a)

    def tell(self):
        return self._f.tell()

    def close(self):
        self._f.close()

    def ioctl(self, req, arg):
        if req == 4:   # MP_STREAM_CLOSE
            self._f.close()
            return 0
        return -1

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._f.close()


class _FS:
    def __init__(self, r):
        self._r = r

    def mount(self, ro, mkfs):
        pass

    def umount(self):
        pass

    def stat(self, p):
        return self._r.stat(p)

    def ilistdir(self, p):
        return self._r.ilistdir(p)

    def statvfs(self, p):
        return self._r.statvfs(p)

    def open(self, p, m):
        return _File(self._r.open(p, m))


vfs.umount("/rom")
vfs.mount(_FS(vfs.VfsRom(vfs.rom_ioctl(2, 0))), "/rom")
