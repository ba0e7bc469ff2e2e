"""Board modules load in small heap pieces (tools/uspdm_tools/mpy_pieces.py).

On a stock board (`mpremote cp`) importing a module copies its .mpy into the heap
one allocation per piece (each function's bytecode or machine code, the module's
qstr/constant tables, long constants), and the GC never moves them: an import needs
a free block as large as its largest piece.  The session stack is imported after
KEY_EXCHANGE's EC work, when a 128 KB board has ~12-17 KB free only in pieces of
~1 KB (ISSUE 9): its modules must need no block over SESSION_BOUND bytes.  Every
other board module stays under GENERAL_BOUND, or under the figure it has today
(KNOWN), so that a function that grows is caught here rather than as an
intermittent MemoryError on the emulated board.
"""
import os
import subprocess

import pytest

from uspdm_tools import build_mpy, mpy_pieces

# the session stack: what uspdm.sess_load / SessionGate import for a session
SESSION_STACK = ("uspdm.session", "uspdm.keysched", "uspdm.secured", "uspdm.crypto.aes", "uspdm.crypto.gcm",
                 "uspdm.crypto._gcmv", "uspdm.crypto.hkdf", "uspdm.crypto.hmac", "uspdm.sess_hs", "uspdm.sess_kex",
                 "uspdm.sess_psk", "uspdm.sess_fin", "uspdm.sess_more", "uspdm.sess_load", "uspdm.session_gate")
SESSION_BOUND = 640
GENERAL_BOUND = 768
# larger today (bytes, armv6m): not to grow.  The comb tables are constants (one bytes
# object per row); _sha512v's compress is one viper kernel (loaded at boot, resident)
KNOWN = {
    "uspdm.crypto._sha512v": 3094,
    "uspdm.crypto.ec_p384_tbl": 1537,
    "uspdm.crypto.ec_p256_tbl": 1025,
    "spdm_setup": 1536,   # boot only: imported while the heap is young, dropped after
}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    tree, root = mpy_pieces.build_tree("armv6m", str(tmp_path_factory.mktemp("pieces")))
    mods = {}
    for t in ("lib", "firmware"):
        for mod, mpy, src in mpy_pieces.board_modules(tree, root, (t,)):
            # exact (what the loader allocates), the functions named from the source
            with open(src) as f:
                ps = mpy_pieces.module_pieces(mpy, f.read())
            mods[mod] = [p for p in ps if p[0] != "dict"]   # (dicts: estimates, not checked)
    return mods


def _largest(ps):
    return max(ps, key=lambda p: p[1])


def test_session_stack_loads_in_small_pieces(board):
    for mod in SESSION_STACK:
        assert mod in board, mod
        w, n, where = _largest(board[mod])
        assert n <= SESSION_BOUND, "%s: its largest piece (%s %s) is %d B > %d B" % (mod, w, where or "<module>",
                                                                                   n, SESSION_BOUND)


def test_every_board_module_stays_under_its_bound(board):
    assert len(board) > 40
    for mod, ps in board.items():
        w, n, where = _largest(ps)
        bound = KNOWN.get(mod, GENERAL_BOUND)
        assert n <= bound, "%s: its largest piece (%s %s) is %d B > %d B" % (mod, w, where or "<module>", n, bound)


def _compile(tmp_path, src, arch="armv6m"):
    py = tmp_path / "m.py"
    py.write_text(src)
    out = tmp_path / "m.mpy"
    subprocess.run([build_mpy.mpy_cross(), "-march=" + arch, "-X", "no-source-lines", "-o", str(out), str(py)],
                   check=True, capture_output=True)
    return out.read_bytes()


def test_the_reader_finds_each_piece(tmp_path):
    # a 700-byte bytes constant, a function of ~1 KB of bytecode and a viper kernel: each
    # is one piece of the size the source implies, and nothing of the file is left unread
    body = "".join("    x = x * %d + y\n" % i for i in range(200))
    src = ("import micropython\nK = b'%s'\n\ndef big(x, y):\n%s    return x\n\ndef small():\n    return 1\n\n"
           "@micropython.viper\ndef kern(p: ptr8, n: int):\n    i = 0\n    while i < n:\n        p[i] = i\n"
           "        i += 1\n" % ("a" * 700, body))
    ps = mpy_pieces.pieces(_compile(tmp_path, src))
    consts = [n for w, n, _ in ps if w == "const"]
    assert 701 in consts   # the 700 bytes and their terminating null
    code = {where: (w, n) for w, n, where in ps if w in mpy_pieces.KINDS}
    assert code["/0"][0] == "code" and code["/0"][1] > 1000   # big(): 200 statements of ~6 bytes
    assert code["/1"][0] == "code" and code["/1"][1] < 40     # small()
    assert code["/2"][0] == "viper" and 40 < code["/2"][1] < 400
    named = mpy_pieces.module_pieces(str(tmp_path / "m.mpy"), src)
    assert named[0][2] == "big" and named[0][1] == code["/0"][1]
    # a truncated file is an error, not a silent partial answer
    data = _compile(tmp_path, src)
    with pytest.raises(mpy_pieces.MpyError):
        mpy_pieces.pieces(data[:-3])


def test_cli_lists_the_largest_pieces(capsys, tmp_path):
    assert mpy_pieces.main(["uspdm.crypto._gcmv", "--top", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "uspdm.crypto._gcmv" in out and "viper" in out
    assert mpy_pieces.main(["no.such.module", "--out", str(tmp_path)]) == 1


def test_a_module_with_a_syntax_error_in_source_is_still_read(tmp_path):
    os.makedirs(str(tmp_path), exist_ok=True)
    data = _compile(tmp_path, "def f():\n    return 2\n")
    (tmp_path / "x.mpy").write_bytes(data)
    ps = mpy_pieces.module_pieces(str(tmp_path / "x.mpy"), "def f(:\n")
    assert ps and all(p[0] != "dict" for p in ps)
