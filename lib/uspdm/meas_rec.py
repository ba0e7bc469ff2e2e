"""The measurement records of a booted board: what GET_MEASUREMENTS,
CHALLENGE_AUTH and KEY_EXCHANGE_RSP read once `Measurements.freeze()` built
them (uspdm.measurements), without the declaration and digesting code, which a
board drops after boot (firmware/spdm_setup.py settle()).

    r = Records(rec, tcb, n, single, version)   # Measurements.freeze() makes it: m.frozen
    r.count(); r.record(index, hashname); r.summary_hash(kind, hashname, meas_hashname=None)

rec: hash name -> every block's record (DSP0274 measurement block) concatenated,
in index order; tcb: one byte per block, 1 for a TCB block; single: OpenPRoT's
one manifest index (0xFD) or None; version: content-changed detection."""
from uspdm.compat import p16


def _split(rec):
    """(index, offset, length) of each block in a record of all blocks."""
    out = []
    o = 0
    while o + 4 <= len(rec):
        n = 4 + (rec[o + 2] | rec[o + 3] << 8)
        out.append((rec[o], o, n))
        o += n
    return out


class Records:
    def __init__(self, rec, tcb, n, single=None, version=0):
        self._rec = rec
        self._tcb = tcb
        self._n = n
        self.single = single
        self.version = version

    def count(self):
        return 1 if self.single else self._n

    def _single(self, hashname):
        v = self._rec.get(hashname)
        if v is None:
            return None
        return bytes((self.single, 0x01)) + p16(3 + len(v)) + bytes((0x84,)) + p16(len(v)) + v

    def record(self, index, hashname):
        """Measurement record bytes for one index or all (0xFF), and how many blocks;
        None if the index is unknown (or the hash was not frozen)."""
        if self.single:
            if index not in (0xFF, self.single):
                return None
            v = self._single(hashname)
            return (v, 1) if v is not None else None
        rec = self._rec.get(hashname)
        if rec is None:
            return None
        if index == 0xFF:
            return rec, self._n
        for i, o, n in _split(rec):
            if i == index:
                return rec[o:o + n], 1
        return None

    def summary_hash(self, kind, hashname, meas_hashname=None):
        """Measurement summary hash: Hash(concatenated blocks) over the TCB
        blocks (kind 1) or all blocks (kind 0xFF), blocks in the measurement hash."""
        from uspdm.crypto import sha2

        h = sha2.new(hashname)
        mh = meas_hashname or hashname
        if self.single:
            h.update(self._single(mh) or b"")   # OpenPRoT: the one manifest block is the TCB and all
            return h.digest()
        rec = self._rec.get(mh) or b""
        mv = memoryview(rec)
        k = 0
        for i, o, n in _split(rec):
            if kind == 0xFF or self._tcb[k]:
                h.update(mv[o:o + n])
            k += 1
        return h.digest()
