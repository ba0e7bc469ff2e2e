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


def test_file_storage():
    calls = []
    with scratch_dir("uspdm-storage-test") as tmp:
        st = FileStorage(tmp + "/a", on_write=lambda: calls.append(1))
        _check(st)
        assert len(calls) == 4
        raises(ValueError, st.read, "../etc/passwd")
        raises(ValueError, st.write, "/abs", b"")


def test_memory_storage():
    _check(MemoryStorage())
