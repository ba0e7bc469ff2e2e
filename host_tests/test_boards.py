"""The RP2040 and ESP32-S3 board modules and the real-board service setup,
with fake `machine`, `rp2`, `os`, `micropython` objects (no hardware here).
What is checked: settings from flash, capability detection and the boot
messages, the I2C target / controller construction with the documented
MicroPython signatures (I2CTarget(id, addr, *, mem, mem_addrsize, scl, sda),
irq(handler, trigger, hard)), fallback to USB serial only, the boot-button
REPL escape, entropy sources, measured files."""
import importlib.util
import os
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in ("lib", "firmware"):
    if os.path.join(ROOT, p) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, p))

import serve  # noqa: E402
from uspdm.storage import MemoryStorage  # noqa: E402


def load_board(name):
    spec = importlib.util.spec_from_file_location("board_" + name, os.path.join(ROOT, "boards", name, "board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod._storage = MemoryStorage()
    return mod


class FakePin:
    OUT = 1
    IN = 0
    PULL_UP = 2
    levels = {}

    def __init__(self, n, mode=None, pull=None):
        self.n = n
        self.v = 0

    def value(self, v=None):
        if v is None:
            return FakePin.levels.get(self.n, 1)
        self.v = v


def fake_machine(hard=True, target=True):
    made = {}

    class Irq:
        def flags(self):
            return 0

    class Target:
        IRQ_END_READ = 16
        IRQ_END_WRITE = 32

        def __init__(self, id, addr, *, addrsize=7, mem=None, mem_addrsize=8, scl=None, sda=None):
            made["target"] = dict(id=id, addr=addr, mem=mem, mem_addrsize=mem_addrsize, scl=scl and scl.n,
                                  sda=sda and sda.n)

        def irq(self, handler=None, trigger=48, hard=False):
            made["irq"] = dict(trigger=trigger, hard=hard)
            if hard and "IRQ_WRITE_REQ" not in type(self).__dict__:
                raise ValueError("hard IRQ unsupported")
            return Irq()

    if hard:
        Target.IRQ_ADDR_MATCH_READ = 1
        Target.IRQ_ADDR_MATCH_WRITE = 2
        Target.IRQ_READ_REQ = 4
        Target.IRQ_WRITE_REQ = 8

    class I2C:
        def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
            made["ctl"] = dict(id=id, scl=scl and scl.n, sda=sda and sda.n, freq=freq)

    m = types.SimpleNamespace(Pin=FakePin, I2C=I2C, made=made)
    if target:
        m.I2CTarget = Target
    return m


class FakeDev:
    def __init__(self):
        self.i2c_out = []
        self.logs = []

    def log(self, m):
        self.logs.append(m)


@pytest.mark.parametrize("name,sda,scl,csda,cscl", [("rp2040", 4, 5, 6, 7), ("esp32", 8, 9, 4, 5)])
def test_responder_opens_i2c_target_and_controller(name, sda, scl, csda, cscl, monkeypatch):
    b = load_board(name)
    monkeypatch.setattr(sys.implementation, "version", (1, 26, 0, ""), raising=False)
    m = fake_machine(hard=(name == "rp2040"))
    svc, what = serve.build(b, FakeDev(), m, print)
    assert svc.port is not None and svc.bridge is None
    t = m.made["target"]
    assert (t["id"], t["addr"], t["sda"], t["scl"]) == (0, 0x1D, sda, scl)
    c = m.made["ctl"]
    assert (c["id"], c["sda"], c["scl"], c["freq"]) == (1, csda, cscl, 100000)
    if name == "rp2040":
        # hard IRQ capture: ADDR_MATCH_WRITE | WRITE_REQ | END_WRITE, hard=True, no memory buffer
        assert m.made["irq"] == {"trigger": 2 | 8 | 32, "hard": True} and t["mem"] is None
        assert "capture hard" in what
    else:
        # esp32: no hard IRQ: a memory buffer with mem_addrsize=0 and a soft END_WRITE
        assert m.made["irq"] == {"trigger": 32, "hard": False}
        assert t["mem_addrsize"] == 0 and len(t["mem"]) >= 258
        assert "capture mem" in what


def test_esp32_on_a_port_with_hard_irq_still_uses_its_setting(monkeypatch):
    b = load_board("esp32")
    monkeypatch.setattr(sys.implementation, "version", (1, 27, 0, ""), raising=False)
    m = fake_machine(hard=True)
    svc, what = serve.build(b, FakeDev(), m, print)
    assert m.made["irq"]["hard"] is False   # i2c_hard_irq=0 on the esp32 board


@pytest.mark.parametrize("version,target,expect", [
    ((1, 25, 0, ""), True, "needs 1.26+"),
    ((1, 26, 0, ""), False, "no machine.I2CTarget"),
])
def test_fallback_to_usb_serial_only_with_a_clear_message(version, target, expect, monkeypatch):
    b = load_board("esp32")
    monkeypatch.setattr(sys.implementation, "version", version, raising=False)
    svc, what = serve.build(b, FakeDev(), fake_machine(target=target), print)
    assert svc.port is None and svc.bridge is None
    assert what.startswith("USB serial only") and expect in what


def test_bridge_mode_from_flash_settings(monkeypatch):
    b = load_board("rp2040")
    b._storage.write("uspdm/board.cfg", b"mode=bridge\nbridge_target=0x22\ni2c_freq=400000\n")
    monkeypatch.setattr(sys.implementation, "version", (1, 26, 1, ""), raising=False)
    m = fake_machine()
    svc, what = serve.build(b, FakeDev(), m, print)
    assert svc.bridge is not None and svc.bridge.target == 0x22
    assert m.made["target"]["addr"] == 0x10 and m.made["ctl"]["freq"] == 400000
    assert "bridge" in what


def test_i2c_address_persisted_on_flash(monkeypatch):
    b = load_board("rp2040")
    b._storage.write("uspdm/i2c_addr.bin", b"\x30")
    monkeypatch.setattr(sys.implementation, "version", (1, 26, 0, ""), raising=False)
    m = fake_machine()
    serve.build(b, FakeDev(), m, print)
    assert m.made["target"]["addr"] == 0x30


def test_i2c_disabled_setting():
    b = load_board("rp2040")
    b._storage.write("uspdm/board.cfg", b"i2c=0\n")
    svc, what = serve.build(b, FakeDev(), fake_machine(), print)
    assert svc.port is None and "disabled" in what


def _fake_time(monkeypatch, clock):
    t = types.SimpleNamespace(ticks_ms=lambda: clock[0], ticks_diff=lambda a, b: a - b,
                              sleep_ms=lambda n: clock.__setitem__(0, clock[0] + n))
    monkeypatch.setitem(sys.modules, "time", t)


@pytest.mark.parametrize("press_at,expect", [(None, False), (300, True), (2000, False)])
def test_rp2040_bootsel_during_boot_window_skips_firmware(press_at, expect, monkeypatch):
    b = load_board("rp2040")
    clock = [0]
    _fake_time(monkeypatch, clock)
    rp2 = types.SimpleNamespace(bootsel_button=lambda: int(press_at is not None and clock[0] >= press_at))
    monkeypatch.setitem(sys.modules, "rp2", rp2)
    monkeypatch.setitem(sys.modules, "machine", fake_machine())
    assert b.skip_firmware() is expect
    assert clock[0] <= 1100


def test_esp32_boot_button_gpio0(monkeypatch):
    b = load_board("esp32")
    clock = [0]
    _fake_time(monkeypatch, clock)
    monkeypatch.setitem(sys.modules, "machine", fake_machine())
    FakePin.levels = {0: 0}          # pressed: pulled low
    try:
        assert b.skip_firmware() is True
        FakePin.levels = {0: 1}
        assert b.skip_firmware() is False
    finally:
        FakePin.levels = {}


def test_rp2040_entropy_prefers_urandom_else_rosc(monkeypatch):
    b = load_board("rp2040")
    fake_os = types.SimpleNamespace(urandom=lambda n: b"\xAB" * n)
    monkeypatch.setitem(sys.modules, "os", fake_os)
    assert b.entropy(4) == b"\xAB" * 4
    # no os.urandom: the ROSC RANDOMBIT register, read through machine.mem32
    monkeypatch.setitem(sys.modules, "os", types.SimpleNamespace())
    reads = []

    class Mem32:
        def __getitem__(self, addr):
            reads.append(addr)
            return len(reads) * 7 % 3  # some bit pattern

    m = fake_machine()
    m.mem32 = Mem32()
    monkeypatch.setitem(sys.modules, "machine", m)
    out = b.entropy(40)
    assert len(out) == 40 and len(set(out)) > 20
    assert set(reads) == {0x4006001C}
    assert len(reads) == 2 * 512       # 512 raw bits per 32 output bytes


def test_esp32_entropy_needs_urandom(monkeypatch):
    b = load_board("esp32")
    monkeypatch.setitem(sys.modules, "os", types.SimpleNamespace())
    with pytest.raises(RuntimeError):
        b.entropy(4)


def test_capabilities_detected_at_run_time():
    import boardlib

    h = types.SimpleNamespace(sha256=1, sha384=1)
    caps = boardlib.capabilities({"hashlib": h, "cryptolib": types.SimpleNamespace(aes=1),
                                  "os": types.SimpleNamespace(urandom=1), "machine": fake_machine(hard=False)})
    assert caps["hashlib"] == ["sha256", "sha384"] and caps["cryptolib"] and caps["i2c_target"]
    assert not caps["i2c_hard_irq"]
    line = boardlib.caps_line(caps)
    assert "sha256/sha384" in line and "soft IRQ" in line
    caps = boardlib.capabilities({"hashlib": types.SimpleNamespace(sha256=1), "machine": None})
    assert caps["hashlib"] == ["sha256"] and not caps["cryptolib"] and not caps["i2c_target"]
    assert "no (pure AES)" in boardlib.caps_line(caps)


def test_measured_files_walk(tmp_path):
    import boardlib

    tree = {"/": ["main.py", "board.mpy", "lib", "uspdm", "notes.txt"], "/lib": ["mctp", "x.mpy"],
            "/lib/mctp": ["packet.mpy"], "/uspdm": ["key.bin"]}
    dirs = {"/lib", "/uspdm", "/lib/mctp"}
    out = boardlib.measured_files(lambda p: tree[p], lambda p: p in dirs)
    assert out == [("board.mpy", "/board.mpy"), ("lib/mctp/packet.mpy", "/lib/mctp/packet.mpy"),
                   ("lib/x.mpy", "/lib/x.mpy"), ("main.py", "/main.py")]


def test_measured_files_walk_roots():
    # the simulator's layout: several labelled folders, walked in the order given
    import boardlib

    tree = {"/firmware": ["main.py", "sub"], "/firmware/sub": ["a.mpy", "b.txt"], "/lib": ["z.py"]}
    dirs = {"/firmware/sub"}

    def listdir(p):
        if p not in tree:
            raise OSError(2)
        return tree[p]

    out = boardlib.measured_files(listdir, lambda p: p in dirs,
                                  roots=(("/lib", "lib"), ("/missing", "m"), ("/firmware", "firmware")))
    assert out == [("lib/z.py", "/lib/z.py"), ("firmware/main.py", "/firmware/main.py"),
                   ("firmware/sub/a.mpy", "/firmware/sub/a.mpy")]


def test_code_files_on_real_folder(tmp_path, monkeypatch):
    import boardlib

    (tmp_path / "lib" / "mctp").mkdir(parents=True)
    (tmp_path / "lib" / "mctp" / "packet.py").write_text("")
    (tmp_path / "lib" / "notes.txt").write_text("")
    root = str(tmp_path)
    assert boardlib.is_dir(root + "/lib") and not boardlib.is_dir(root + "/lib/notes.txt")
    assert not boardlib.is_dir(root + "/gone")
    out = boardlib.code_files(((root + "/lib", "lib"),))
    assert out == [("lib/mctp/packet.py", root + "/lib/mctp/packet.py")]


def test_board_module_api_present():
    for name in ("rp2040", "esp32"):
        b = load_board(name)
        for attr in ("NAME", "MCU", "storage", "entropy", "drbg", "ticks_ms", "ticks_diff", "measured_files",
                     "config", "serve", "skip_firmware", "led"):
            assert hasattr(b, attr), (name, attr)
        cfg = b.config()
        assert cfg["serial_mtu"] == 64 and cfg["i2c_addr"] == 0x1D and cfg["mode"] == "responder"


def test_main_skips_firmware_when_button_held(monkeypatch, capsys):
    import main

    calls = []
    fake = types.SimpleNamespace(skip_firmware=lambda: True, serve=lambda dev: calls.append(dev))
    monkeypatch.setitem(sys.modules, "board", fake)
    main.main()
    assert calls == [] and "REPL" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["rp2040", "esp32"])
def test_repl_escape_is_off_by_default(name):
    """\\r\\x03 on the MCTP line must not hand over the REPL (it reads the key) unless the
    lab setting repl_escape=1 says so; physical presence (the boot button) is the default."""
    b = load_board(name)
    assert b.config()["repl_escape"] == 0
    assert serve.repl_escape(b.config()) is False
    assert serve.repl_escape({}) is False
    b._cfg = None
    b._storage.write("uspdm/board.cfg", b"repl_escape=1\n")
    assert serve.repl_escape(b.config()) is True
