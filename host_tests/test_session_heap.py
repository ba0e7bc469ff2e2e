"""Live heap of the responder with secure sessions on real MicroPython (wasm):
one session + attestation inside it must stay under the issue's 80 KB budget
(protocol state, i.e. live heap minus the code of the imported modules).
Method: uspdm_tools.bench_session.heap_figures (one MicroPython call per
message and per deferred-work slice; gc.mem_alloc() after gc.collect())."""
from uspdm_tools.bench_session import heap_figures


def test_session_live_heap_budget():
    f = heap_figures()
    code = f["code"]
    print("\nsession heap (minus code %d B): state %d, one session %d, handshake peak %d, "
          "attestation peak %d, two sessions %d, after END_SESSION %d" % (
              code, f["state"] - code, f["one_session"] - code, f["handshake_peak"] - code,
              f["attestation_peak"] - code, f["two_sessions"] - code, f["after_end"] - code))
    assert f["attestation_peak"] - code < 80 * 1024
    assert f["two_sessions"] > f["one_session"] > f["state"]
    # END_SESSION releases the sessions (what stays is the connection's own state)
    assert f["after_end"] - f["state"] < f["two_sessions"] - f["state"]
