from uspdm.storage import FileStorage, MemoryStorage
from _util import raises, scratch_dir


def _check(st):
    assert st.read("uspdm/key_p384.bin") is None
    st.write("uspdm/key_p384.bin", b"\x01" * 48)
    st.write("uspdm/slot0_p384.der", b"chain")
    assert st.read("uspdm/key_p384.bin") == b"\x01" * 48
    assert st.exists("uspdm/slot0_p384.der")
    st.write("uspdm/slot0_p384.der", b"chain2")
    assert st.read("uspdm/slot0_p384.der") == b"chain2"
    assert st.list("uspdm") == ["key_p384.bin", "slot0_p384.der"]
    assert st.delete("uspdm/slot0_p384.der")
    assert not st.delete("uspdm/slot0_p384.der")
    assert st.read("uspdm/slot0_p384.der") is None
    # read_into: the part asked for, from an offset, into a buffer (never the whole file)
    data = bytes((i * 5) & 0xFF for i in range(600))
    st.write("uspdm/slot1_p256.der", data)
    buf = bytearray(300)
    for off, n in ((0, 300), (10, 17), (299, 256), (590, 30), (600, 5), (700, 5)):
        mv = memoryview(buf)[0:n]
        got = st.read_into("uspdm/slot1_p256.der", off, mv)
        want = data[off:off + n]
        assert got == len(want) and bytes(mv[0:got]) == want, (off, n)
    assert st.read_into("uspdm/nothing.bin", 0, buf) is None


def test_file_storage():
    calls = []
    with scratch_dir("uspdm-storage-test") as tmp:
        st = FileStorage(tmp + "/a", on_write=lambda: calls.append(1))
        _check(st)
        assert len(calls) == 5
        raises(ValueError, st.read, "../etc/passwd")
        raises(ValueError, st.write, "/abs", b"")


def test_memory_storage():
    _check(MemoryStorage())
