"""End to end over serial: a board set to defer its signatures answers
CHALLENGE and signed GET_MEASUREMENTS with ResponseNotReady, and the
verifier's RESPOND_IF_READY gets the signed answers (checked with
`cryptography` by the verifier)."""
import subprocess
import sys

import pytest

from uspdm_tools.link import SerialLink, Unreachable
from uspdm_tools.verifier import LinkTransport, attest, load_root


@pytest.mark.parametrize("setting,deferred", [("1", True), ("0", False)])
def test_defer_signing_setting_over_serial(request, tmp_path, setting, deferred):
    if request.config.getoption("--port"):
        pytest.skip("simulator only (sets the board's settings)")
    from uspdm_tools.simproc import SimProcess

    flash, ca = str(tmp_path / "flash"), str(tmp_path / "ca")
    subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash, "--ca-dir", ca,
                    "--alg", "p384"], check=True, capture_output=True, timeout=300)
    root, _ = load_root(ca + "/ca.cert.pem")
    with SimProcess(flash=flash, extra_args=["--set", "defer_signing=" + setting]) as sim:
        link = SerialLink(sim.port, timeout=20)
        try:
            code, rep = attest(LinkTransport(link, Unreachable), root)
        finally:
            link.close()
        log = sim.log_text()
    assert code == 0, rep.get("reason")
    retries = {t.name: t.retries for t in rep["timings"]}
    assert (retries["CHALLENGE"] >= 1) == deferred
    assert ("deferred (ResponseNotReady)" in log) == deferred
