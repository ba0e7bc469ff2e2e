"""Measurement blocks for GET_MEASUREMENTS (DSP0274 DMTF measurement specification).

The firmware declares its blocks once at boot; the responder asks for them in
the negotiated measurement hash:

    m = Measurements()
    m.add_file(1, '/lib/uspdm/responder.py')          # digest of a file, streamed from flash
    m.add_files(2, ['/lib/mctp/a.py', '/lib/mctp/b.py'])  # one digest over several files
    m.add_raw(0x10, MT_VERSION, b'MicroPython 1.26.0')    # raw bit stream
    m.add_raw(0x11, MT_HW_CONFIG, b'board=rp2040')
    m.add_svn(0x12, 3)                                    # u64 LE, raw
    m.add_device_mode(DEVICE_MODE_INDEX)                  # 16-byte DMTF device-mode structure

or equivalently from a list of tuples `Measurements([(index, dmtf_type, form, value), ...])`
where form is 'raw' (value = bytes) or 'digest' (value = bytes to digest, a
path string prefixed 'file:', paths joined by newlines prefixed 'files:' (what
add_files stores), a list of paths, or a callable hashname -> digest).

uspdm's standard indices (firmware/spdm_setup.py declares them; the README quotes them):
  1..0x3E   one digest per deployed firmware file, in sorted order
            (DMTF type 1 'mutable firmware'; TCB)
  0x3F      one digest over any files beyond 0x3E (type 1; TCB)
  0x40      digest of the board configuration (DMTF type 3 'firmware configuration')
  0x41      MicroPython version string, raw (DMTF type 6 'version')
  0x42      board / hardware description, raw (DMTF type 2 'hardware configuration')
  0x43      security version number, u64 little-endian, raw (DMTF type 7 'SVN')
  0xFE      device mode, raw 16 bytes (DMTF type 5, index fixed by DSP0274)
Indices are stable: adding a file appends a new index, it does not renumber.

Block layout: Index u8 | MeasurementSpecification u8 (=1, DMTF) | MeasurementSize u16 |
DMTFSpecMeasurementValueType u8 | DMTFSpecMeasurementValueSize u16 | value.

TCB blocks (measurement summary hash type 1) default to DMTF types 0 (ROM)
and 1 (firmware); pass tcb=True/False to override.
Digests are computed lazily per hash algorithm and cached (H bytes each);
`prepare(hashname)` computes them all up front (e.g. at boot).
`version` increments whenever a value changes (content-changed detection).
"""
from uspdm.compat import p16, p32

DEVICE_MODE_INDEX = 0xFE
MT_RAW = 0x80
_CHUNK = 512


def file_digest(path, hashname):
    """Digest a file streaming it in small chunks (no whole-file buffer)."""
    return _stream_digest((path,), hashname, False)


def files_digest(paths, hashname):
    """One digest over several files, each preceded by its path and length
    (so moving bytes between files changes the digest)."""
    return _stream_digest(paths, hashname, True)


def _stream_digest(paths, hashname, framed):
    # the files' bytes through one hash in _CHUNK-byte reads into one buffer;
    # framed: each file preceded by u16 path length | path | u32 file size
    from uspdm.crypto import sha2

    h = sha2.stream(hashname)   # one pass: no copy, no replay buffer
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    for p in paths:
        if framed:
            import os

            size = os.stat(p)[6]
            pb = p.encode() if isinstance(p, str) else p
            h.update(p16(len(pb)) + pb + p32(size))
        with open(p, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    return h.digest()


class Block:
    def __init__(self, index, dmtf_type, form, value, tcb=None):
        if not 1 <= index <= 0xFE:
            raise ValueError("measurement index must be 1..0xFE")
        self.index = index
        self.type = dmtf_type & 0x7F
        self.raw = form == "raw"
        if form not in ("raw", "digest"):
            raise ValueError("form must be 'raw' or 'digest'")
        self.value = value
        self.tcb = (self.type in (0, 1)) if tcb is None else bool(tcb)
        self._digests = {}

    def value_for(self, hashname):
        """(dmtf type byte, value bytes) in the given measurement hash."""
        if self.raw:
            return self.type | MT_RAW, self.value
        d = self._digests.get(hashname)
        if d is None:
            v = self.value
            if callable(v):
                d = v(hashname)
            elif isinstance(v, str) and v.startswith("file:"):
                d = file_digest(v[5:], hashname)
            elif isinstance(v, str) and v.startswith("files:"):
                d = files_digest(v[6:].split("\n"), hashname)
            elif isinstance(v, (list, tuple)):
                d = files_digest(v, hashname)
            else:
                from uspdm.crypto import sha2

                d = sha2.new(hashname, v).digest()
            self._digests[hashname] = d
        return self.type, d

    def encode(self, hashname):
        t, v = self.value_for(hashname)
        return bytes((self.index, 0x01)) + p16(3 + len(v)) + bytes((t,)) + p16(len(v)) + v


OPENPROT_INDEX = 0xFD   # DSP0274's measurement manifest index, as OpenPRoT's spdm-lib reports it


class Measurements:
    def __init__(self, blocks=()):
        self.blocks = []
        self.version = 0
        # OpenPRoT profile (board setting openprot=1): one block at `single`
        # (0xFD), DMTF type 4 freeform manifest, raw, whose value is every
        # block above concatenated; the summary hash (TCB or all) is over it
        self.single = None
        self.frozen = None   # uspdm.meas_rec.Records once frozen (freeze())
        for b in blocks:
            if isinstance(b, Block):
                self._add(b)
            else:
                self._add(Block(*b))

    def _add(self, b):
        for i, o in enumerate(self.blocks):
            if o.index == b.index:
                self.blocks[i] = b
                self.version += 1
                return b
            if o.index > b.index:
                self.blocks.insert(i, b)
                self.version += 1
                return b
        self.blocks.append(b)
        self.version += 1
        return b

    # declaration helpers ---------------------------------------------------
    def add_raw(self, index, dmtf_type, data, tcb=None):
        return self._add(Block(index, dmtf_type, "raw", bytes(data), tcb))

    def add_digest(self, index, dmtf_type, data, tcb=None):
        """Digest of in-memory data (or a callable hashname -> digest)."""
        return self._add(Block(index, dmtf_type, "digest", data, tcb))

    def add_file(self, index, path, dmtf_type=1, tcb=None):
        return self._add(Block(index, dmtf_type, "digest", "file:" + path, tcb))

    def add_files(self, index, paths, dmtf_type=1, tcb=None):
        # the paths kept as one string (a list of 50 short strings is about twice the heap)
        return self._add(Block(index, dmtf_type, "digest", "files:" + "\n".join(paths), tcb))

    def add_svn(self, index, svn, tcb=None):
        return self.add_raw(index, 7, _u64(svn), tcb)

    def add_device_mode(self, index=DEVICE_MODE_INDEX, op_caps=0x3F, op_state=0x04, dev_caps=0x1F, dev_state=0):
        """Device mode (DMTF type 5): operational mode capabilities/state and
        device mode capabilities/state, each u32 LE.  op_state 0x04 = normal."""
        return self.add_raw(index, 5, p32(op_caps) + p32(op_state) + p32(dev_caps) + p32(dev_state), False)

    def set_raw(self, index, data):
        """Change a raw block's value (content-changed detection sees it)."""
        for b in self.blocks or ():
            if b.index == index:
                b.value = bytes(data)
                self.version += 1
                return True
        return False

    def refresh(self):
        """Forget cached digests (e.g. after a firmware file was rewritten)."""
        for b in self.blocks or ():
            b._digests = {}
        self.version += 1

    def compact(self):
        """Copy the cached digests into fresh objects (call after gc.collect()): on a
        board whose GC never moves objects, digests computed among other work's
        garbage pin small islands all over the heap; the copies go to the lowest
        free blocks and the originals become garbage."""
        for b in self.blocks or ():
            d = b._digests
            if d:
                n = {}
                for k in d:
                    n[k] = bytes(bytearray(d[k]))
                b._digests = n

    def freeze(self, hashnames):
        """Read-only from now on (a board once booted): the measurement record of
        every block in each of `hashnames` is built once (what GET_MEASUREMENTS
        sends for all blocks; one index or the summary hash are read from it)
        and the blocks go: 20 Block objects with their digest dicts and values
        are about 5 KB of heap, the two records 2 KB.  A hash not frozen then
        has no record (record() returns None), and set_raw/refresh/prepare do
        nothing.  Only when every file digest is already there in each of
        `hashnames` (no file is read here); returns whether it froze.
        Call after gc.collect(): the records go to the lowest free blocks."""
        if self.blocks is None:
            return True
        for b in self.blocks:
            v = b.value
            if not b.raw and isinstance(v, str) and v.startswith("file"):
                for h in hashnames:
                    if h not in b._digests:
                        return False   # files not digested in that hash yet: stays as it is
        from uspdm.meas_rec import Records

        rec = {}
        for h in hashnames:
            rec[h] = b"".join(b.encode(h) for b in self.blocks)
        self.frozen = Records(rec, bytes(1 if b.tcb else 0 for b in self.blocks), len(self.blocks), self.single,
                              self.version)
        self.blocks = None
        return True

    def prepare(self, hashname):
        for b in self.blocks or ():
            b.value_for(hashname)

    # queries ----------------------------------------------------------------
    # (frozen: the Records answer; a board keeps only them, see uspdm.meas_rec)
    def count(self):
        if self.frozen is not None:
            return self.frozen.count()
        return 1 if self.single else len(self.blocks)

    def _all(self, hashname):
        """Every block's record, concatenated."""
        return b"".join(b.encode(hashname) for b in self.blocks)

    def _single(self, hashname):
        v = self._all(hashname)
        return bytes((self.single, 0x01)) + p16(3 + len(v)) + bytes((0x84,)) + p16(len(v)) + v

    def get(self, index):
        for b in self.blocks or ():
            if b.index == index:
                return b
        return None

    def record(self, index, hashname):
        """Measurement record bytes for one index or all (0xFF); None if the index is unknown."""
        if self.frozen is not None:
            return self.frozen.record(index, hashname)
        if self.single:
            if index not in (0xFF, self.single):
                return None
            return self._single(hashname), 1
        if index == 0xFF:
            return self._all(hashname), self.count()
        b = self.get(index)
        if b is None:
            return None
        return b.encode(hashname), 1

    def summary_hash(self, kind, hashname, meas_hashname=None):
        """Measurement summary hash: Hash(concatenated blocks) over the TCB
        blocks (kind 1) or all blocks (kind 0xFF), blocks in the measurement hash."""
        if self.frozen is not None:
            return self.frozen.summary_hash(kind, hashname, meas_hashname)
        from uspdm.crypto import sha2

        h = sha2.new(hashname)
        mh = meas_hashname or hashname
        if self.single:
            h.update(self._single(mh))   # OpenPRoT: the one manifest block is the TCB and all
            return h.digest()
        for b in self.blocks:
            if kind == 0xFF or b.tcb:
                h.update(b.encode(mh))
        return h.digest()


def _u64(v):
    return bytes(((v >> (8 * i)) & 0xFF) for i in range(8))
