"""`make demo` keeps working: provision the simulated board, attest it, TRUSTED."""
import subprocess
import sys


def test_demo_attests_the_simulated_board(tmp_path, request):
    if request.config.getoption("--port"):
        import pytest

        pytest.skip("the demo's simulator path")
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.demo", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Verdict: TRUSTED" in p.stdout
    assert "device TRUSTED" in p.stdout
    assert "ENROLLED: slot 1 P384, attestation TRUSTED" in p.stdout   # uspdm enroll, over SPDM
    # the lab CA the demo made is the trust anchor it used
    assert (tmp_path / "ca" / "ca.cert.pem").exists()
    assert (tmp_path / "flash" / "uspdm" / "key_p384.bin").exists()


def test_demo_with_a_silent_port_says_what_to_do(tmp_path):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.demo", "--dir", str(tmp_path), "--port",
                        str(tmp_path / "no-such-port")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "make deploy" in p.stderr
