from uspdm import compat


def test_bit_length():
    for n in (0, 1, 2, 255, 256, (1 << 64) - 1, 1 << 64, (1 << 384) - 1, -5):
        expect = len(bin(abs(n))) - 2 if n else 0
        assert compat.bit_length(n) == expect, n


def test_ct_eq():
    assert compat.ct_eq(b"abc", b"abc")
    assert not compat.ct_eq(b"abc", b"abd")
    assert not compat.ct_eq(b"abc", b"ab")


def test_le_helpers():
    assert compat.u16(compat.p16(0xBEEF)) == 0xBEEF
    assert compat.u24(compat.p24(0x123456)) == 0x123456
    assert compat.u32(compat.p32(0xDEADBEEF)) == 0xDEADBEEF
    assert compat.p16(0x0102) == b"\x02\x01"


def test_demand_drop_of_a_module_its_package_no_longer_names():
    # (MicroPython raises KeyError, CPython AttributeError, for a module attribute that
    # is not there: dropping must be quiet either way)
    import sys

    from uspdm import demand

    m = demand.need("compat")
    assert m is compat or m.__name__ == "uspdm.compat"
    pkg = sys.modules["uspdm"]
    if hasattr(pkg, "compat"):
        delattr(pkg, "compat")
    assert demand.drop("compat", collect=False) == 1
    assert "uspdm.compat" not in sys.modules
    import uspdm.compat   # noqa: F401 (back for the other tests)
