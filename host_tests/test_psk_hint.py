"""PSK hints are bytes (issue 15.3) and `provision --psk-hint` validates before
writing anything (issue 11.15)."""
import argparse
import os

import pytest

from uspdm_tools import provision, pskhint

TEST_HINT = b"TestPskHint\x00"   # libspdm's test hint (spdm-emu's default)


def _args(flash, ca_dir, **kw):
    d = dict(port=None, flash=str(flash), ca_dir=str(ca_dir), slot=0, alg="p256", intermediate=False,
             subject=None, device_info=None, new_key=False, psk_hint=None, psk_hint_hex=None, psk_file=None)
    d.update(kw)
    return argparse.Namespace(**d)


def _tree(root):
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def test_hint_parsing_and_display():
    assert pskhint.from_args(hexstr="5465737450736b48696e7400") == TEST_HINT
    assert pskhint.from_args(hexstr="54:65 73-74") == b"Test"
    assert pskhint.from_args(hexstr="0x00ff") == b"\x00\xff"
    assert pskhint.from_args(text="lab1") == b"lab1"
    assert pskhint.from_args(text="\u00e9t\u00e9") == "\u00e9t\u00e9".encode("utf-8")
    assert pskhint.from_args() is None
    for bad in ({"hexstr": "123"}, {"hexstr": "zz"}, {"hexstr": ""}, {"hexstr": "00" * 17},
                {"text": ""}, {"text": "x" * 17}, {"text": "a", "hexstr": "61"}, {"text": "\udcff"}):
        with pytest.raises(pskhint.HintError):
            pskhint.from_args(**bad)
    assert pskhint.from_args(text="x" * 16) == b"x" * 16
    # nothing a device or a user typed reaches the terminal raw
    assert pskhint.escape(TEST_HINT) == "TestPskHint\\x00"
    assert pskhint.escape(b"\x1b[2J\\\x9b") == "\\x1b[2J\\\\\\x9b"
    assert pskhint.show(b"A\x00") == "A\\x00 (hex 4100)"
    # host file names never carry a path
    assert pskhint.host_file_name(b"lab1") == "psk-lab1.bin"
    for h in (b"a/b", b"../x", b".hidden", TEST_HINT, b"\xff", b"a\\b"):
        name = pskhint.host_file_name(h)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name == "psk-hex-%s.bin" % h.hex()
    assert pskhint.cli_args(TEST_HINT) == "--psk-hint-hex 5465737450736b48696e7400"
    assert pskhint.cli_args(b"lab1") == "--psk-hint lab1"


def test_provision_hex_hint_with_nul(tmp_path):
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    assert provision.cmd_provision(_args(flash, ca_dir, psk_hint_hex=TEST_HINT.hex())) == 0
    host = ca_dir / pskhint.host_file_name(TEST_HINT)
    assert host.name == "psk-hex-5465737450736b48696e7400.bin"
    assert (host.stat().st_mode & 0o777) == 0o600
    # where the board's session manager looks it up: uspdm/psk_<hint hex>.bin
    assert (flash / "uspdm" / ("psk_%s.bin" % TEST_HINT.hex())).read_bytes() == host.read_bytes()
    assert not [n for n in os.listdir(ca_dir) if n.endswith(".tmp")]


def test_provision_hint_with_slash_stays_out_of_host_paths(tmp_path, capsys):
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    (tmp_path / "a").mkdir()   # would be the target of a raw "a/b" path
    assert provision.cmd_provision(_args(flash, ca_dir, psk_hint="../a/b")) == 0
    host = ca_dir / ("psk-hex-%s.bin" % b"../a/b".hex())
    assert host.exists()
    assert os.listdir(tmp_path / "a") == []
    assert (flash / "uspdm" / ("psk_%s.bin" % b"../a/b".hex())).read_bytes() == host.read_bytes()
    out = capsys.readouterr().out
    assert "--psk-hint-hex 2e2e2f612f62" in out


@pytest.mark.parametrize("kw", [
    {"psk_hint": "x" * 17},                              # overlong text
    {"psk_hint_hex": "00" * 17},                         # overlong bytes
    {"psk_hint_hex": "0g"},                              # not hex
    {"psk_hint": "a", "psk_hint_hex": "61"},             # both
    {"psk_file": "PSK"},                                 # a file without a hint
    {"psk_hint": "lab", "psk_file": "EMPTY"},            # an empty PSK
    {"psk_hint": "lab", "psk_file": "BIG"},              # a PSK over 64 bytes
    {"psk_hint": "lab", "psk_file": "MISSING"},          # unreadable
])
def test_provision_refuses_bad_psk_args_before_writing(tmp_path, kw):
    files = tmp_path / "in"
    files.mkdir()
    (files / "PSK").write_bytes(b"k" * 32)
    (files / "EMPTY").write_bytes(b"")
    (files / "BIG").write_bytes(b"k" * 65)
    if "psk_file" in kw:
        kw = dict(kw, psk_file=str(files / kw["psk_file"]))
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    before = _tree(tmp_path)
    assert provision.cmd_provision(_args(flash, ca_dir, **kw)) == provision.EXIT_USAGE
    # nothing written: no CA, no flash folder (key, chain), no PSK file
    assert _tree(tmp_path) == before
