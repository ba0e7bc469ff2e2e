"""pytest configuration for uspdm host tests.

Portable tests (host_tests/portable/test_*.py) test code under lib/ and run
twice: on CPython and inside real MicroPython (the wasm build under Node).
Write them with plain asserts and the helpers of host_tests/portable/_util.py
(no pytest features inside the test body); simple @pytest.mark.parametrize
arguments (ints, strings, bytes) are passed through to MicroPython by repr().
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "lib"), os.path.join(ROOT, "tools"), os.path.join(HERE, "portable")):
    if p not in sys.path:
        sys.path.insert(0, p)

from uspdm_tools.mpy import MicroPython, MicroPythonError  # noqa: E402

# Property-based tests explore new random inputs on developer machines; in CI
# (CI=true, set by .ci/run's environment) they replay a fixed sequence so a
# submission's result does not depend on the draw.
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        _hsettings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass

PORTABLE_DIR = os.path.join(HERE, "portable")


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="serial port of a real board (default: the simulated board)")
    parser.addoption("--via-i2c", default=None, help="reach the board through a bridge board at this I2C address")
    parser.addoption("--m0", nargs="?", const="default", default=None, metavar="FIRMWARE.elf",
                     help="run the simulated boards of the end-to-end tests on the emulated Cortex-M0 "
                          "(uspdm sim --m0; default image $USPDM_M0_FW or ../shared/m0/firmware-h200k.elf)")
    parser.addoption("--m0-load", default="ram", choices=("ram", "rom"), help="with --m0: how code is loaded")


def pytest_configure(config):
    # Hermetic: the lab CA and other per-user files go to a folder of this run,
    # never the user's ~/.config (a CA left there by an earlier run would change
    # which root the commands trust by default).
    if not os.environ.get("USPDM_TEST_KEEP_CONFIG"):
        import tempfile

        config._uspdm_config_home = os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="uspdm-test-config-")
    if config.getoption("--m0", default=None):
        os.environ["USPDM_SIM_M0"] = config.getoption("--m0")
        os.environ["USPDM_SIM_M0_LOAD"] = config.getoption("--m0-load")
    config.addinivalue_line("markers", "micropython_only: portable test that runs only on MicroPython")
    config.addinivalue_line("markers", "cpython_only: portable test that runs only on CPython")


def pytest_unconfigure(config):
    home = getattr(config, "_uspdm_config_home", None)
    if home:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def pytest_sessionstart(session):
    """With --port (make test PORT=...), check once that a board answers there:
    a missing or silent port is one message and exit 2, not the whole suite
    failing test by test."""
    config = session.config
    port = config.getoption("--port")
    if not port or hasattr(config, "workerinput"):
        return
    from uspdm_tools.link import SerialLink, Unreachable, check_reachable, likely_fix

    via = config.getoption("--via-i2c")
    try:
        with SerialLink(port, timeout=5, via_i2c=int(via, 0) if via else None) as link:
            check_reachable(link, port, 5, "make test")
    except Unreachable as e:
        msg = str(e)
        if "nothing answers" not in msg:
            msg = "%s: %s" % (msg, likely_fix(port))
        pytest.exit("no board to test on --port %s: %s" % (port, msg), returncode=2)


def _is_portable(module):
    f = getattr(module, "__file__", "") or ""
    return os.path.dirname(os.path.abspath(f)) == PORTABLE_DIR


def pytest_generate_tests(metafunc):
    if "runtime" in metafunc.fixturenames and _is_portable(metafunc.module):
        runtimes = ["cpython", "micropython"]
        if metafunc.definition.get_closest_marker("micropython_only"):
            runtimes = ["micropython"]
        if metafunc.definition.get_closest_marker("cpython_only"):
            runtimes = ["cpython"]
        metafunc.parametrize("runtime", runtimes, indirect=True)


@pytest.fixture(scope="session")
def mpy():
    """One MicroPython interpreter per test session (per xdist worker)."""
    m = MicroPython(mounts=[("host_tests/portable", "/tests"), ("host_tests/vectors", "/vectors")])
    yield m
    m.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or callspec.params.get("runtime") != "micropython":
        return None
    mp = pyfuncitem._request.getfixturevalue("mpy")
    mod = pyfuncitem.module.__name__.rsplit(".", 1)[-1]
    name = pyfuncitem.originalname
    args = ", ".join(
        "%s=%r" % (k, v) for k, v in sorted(callspec.params.items()) if k != "runtime" and k in pyfuncitem.funcargs
    )
    code = "import sys\nif '/tests' not in sys.path: sys.path.insert(0, '/tests')\nimport %s\n%s.%s(%s)\n" % (
        mod, mod, name, args)
    try:
        r = mp.run(code)
    except MicroPythonError as e:
        if e.out:
            sys.stdout.write(e.out + "\n")
        pytest.fail("on MicroPython:\n" + e.traceback, pytrace=False)
    if r.out:
        sys.stdout.write(r.out + "\n")
    return True
