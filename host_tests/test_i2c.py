"""Run the I2C board-side cases of test_i2c_cases.py inside MicroPython
(wasm), the interpreter the boards run; pytest runs them on CPython from
that module directly.  Handlers must also run with the heap locked there
(test_irq_handlers_do_not_allocate: micropython.heap_lock, as in a hard IRQ)."""
import os
import shutil
import tempfile

import pytest

import test_i2c_cases
from uspdm_tools.mpy import MicroPython, MicroPythonError

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = sorted(n for n in dir(test_i2c_cases) if n.startswith("test_"))


@pytest.fixture(scope="module")
def mp():
    tmp = tempfile.mkdtemp(prefix="uspdm-i2c-")
    shutil.copy(os.path.join(HERE, "test_i2c_cases.py"), os.path.join(tmp, "i2c_cases.py"))
    m = MicroPython(mounts=[("firmware", "/firmware"), ("boards/sim", "/simboard"), (tmp, "/ht")])
    m.run("import sys\nfor p in ('/ht', '/firmware', '/simboard'):\n    sys.path.insert(0, p)\n")
    yield m
    m.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("case", CASES)
def test_on_micropython(mp, case):
    try:
        mp.run("import i2c_cases\ni2c_cases.%s()\n" % case, timeout=60)
    except MicroPythonError as e:
        pytest.fail("on MicroPython:\n" + e.traceback, pytrace=False)
