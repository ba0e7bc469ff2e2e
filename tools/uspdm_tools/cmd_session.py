"""uspdm session: open an SPDM secure session with a board and exercise it.

    uspdm session --port PORT [--version 1.x] [--slot N] [--clear-handshake]
    uspdm session --port PORT --psk-hint lab-psk-1 --psk-file psk.bin
    uspdm session --port PORT --psk-hint-hex 5465737450736b48696e7400 --psk-file psk.bin

Certificate session: VERSION/CAPABILITIES/ALGORITHMS, DIGESTS, CERTIFICATE
(validated against the trusted root: --root, by default the lab CA, as for
`uspdm attest`; a board whose chain does not lead there is never OK), KEY_EXCHANGE (signature and
ResponderVerifyData checked), FINISH; PSK session: PSK_EXCHANGE (+ PSK_FINISH
when the responder uses a context).  Inside the session: signed
GET_MEASUREMENTS, HEARTBEAT, KEY_UPDATE (UpdateKey, then UpdateAllKeys, each
followed by VerifyNewKey), GET_MEASUREMENTS again under the new keys, and
END_SESSION.  Prints each step with its time (or JSON with --json).

The key schedule and the secured-message code are the host's own
(uspdm_tools.session_requester, `cryptography`), not the board's.

Exit status: 0 session exercised, 1 usage, 2 unreachable, 3 protocol error,
4 verification failure.
"""
import json
import os
import sys
import time

from . import pskhint
from . import requester as R
from .screen import say
from .session_requester import SessionError, SessionRequester

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_PROTOCOL, EXIT_UNTRUSTED = 0, 1, 2, 3, 4


class LinkAdapter:
    """link.SerialLink -> requester transport: a silent board is TimeoutError."""

    def __init__(self, link, unreachable):
        self.link = link
        self._unreachable = unreachable

    def spdm(self, req, timeout=None):
        try:
            return self.link.spdm(req, timeout=timeout)
        except self._unreachable as e:
            raise TimeoutError(str(e))
        except ValueError as e:
            raise R.ProtocolError("transport: %s" % e)

    def secured(self, body, timeout=None):
        try:
            return self.link.secured(body, timeout=timeout)
        except self._unreachable as e:
            raise TimeoutError(str(e))
        except ValueError as e:
            raise R.ProtocolError("transport: %s" % e)

    def close(self):
        self.link.close()


def register(sub):
    from . import exitcodes as X

    p = sub.add_parser("session", help="open an SPDM secure session (certificate or PSK) and exercise it",
                       description=__doc__.split("\n\n")[0],
                       epilog=X.epilog("session authenticated (chain to the trusted root, or the PSK) and exercised",
                                       X.USAGE, X.UNREACHABLE, X.PROTOCOL, X.UNTRUSTED),
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the board (or the simulator's pty)")
    from . import argtypes as T

    p.add_argument("--eid", type=T.eid, default=None, help="MCTP endpoint ID of the board (0 or 8-254)")
    p.add_argument("--version", dest="spdm_version", choices=["1.1", "1.2", "1.3"], default=None,
                   help="SPDM version to negotiate (default: the highest both support)")
    p.add_argument("--slot", type=int, default=0, choices=range(8), metavar="N", help="certificate slot")
    p.add_argument("--alg", choices=["p384", "p256"], default="p384", help="signature algorithm to offer")
    p.add_argument("--root", default=None,
                   help="trusted root certificate, PEM or DER (default: the lab CA, as for `uspdm attest`)")
    p.add_argument("--psk-hint", default=None,
                   help="PSK hint (UTF-8 text, 1-%d bytes) for a PSK session" % pskhint.MAX_HINT)
    p.add_argument("--psk-hint-hex", default=None, metavar="HEX",
                   help="PSK hint as bytes in hex (e.g. 5465737450736b48696e7400 = TestPskHint\\0)")
    p.add_argument("--psk-file", default=None, help="file holding the PSK bytes (with a hint)")
    p.add_argument("--clear-handshake", action="store_true",
                   help="offer HANDSHAKE_IN_THE_CLEAR (FINISH/FINISH_RSP unencrypted)")
    p.add_argument("--timeout", type=T.seconds, default=10.0, help="seconds to wait for each answer")
    p.add_argument("--deadline", type=T.seconds, default=300.0,
                   help="seconds the whole session run may take, however the board answers (default 300)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=run)


def exercise(q, slot=0, psk_hint=None, psk=None, root=None, log=None):
    """Run the whole session scenario on SessionRequester `q`; returns a report dict."""
    steps = []
    rep = {"steps": steps}

    def step(name, fn, *a, **kw):
        t0 = time.monotonic()
        out = fn(*a, **kw)
        dt = time.monotonic() - t0
        steps.append({"step": name, "ms": round(dt * 1000, 1)})
        if log:
            log("  %-40s %9.1f ms" % (name, dt * 1000))
        return out

    step("VERSION / CAPABILITIES / ALGORITHMS", q.init_connection)
    rep["version"] = R.version_str(q.version)
    rep["capabilities"] = R.cap_names(q.rsp_flags)
    if psk is not None:
        s = step("PSK_EXCHANGE", q.psk_exchange, psk_hint, psk)
        if s.psk_context:
            step("PSK_FINISH", q.psk_finish, s)
        rep["kind"] = "PSK (%s)" % ("with responder context" if s.psk_context else "no PSK_FINISH")
        est = sum(x["ms"] for x in steps[1:])
    else:
        digests = step("GET_DIGESTS", q.get_digests)
        if slot not in digests:
            raise R.ProtocolError("slot %d is not provisioned" % slot)
        buf = step("GET_CERTIFICATE", q.get_certificate, slot)
        if root is None:
            # nothing to check the board's chain against: the peer would be unauthenticated
            raise R.VerificationError("no trusted root to check the board's certificate chain against")
        _check_chain(rep, q, buf, root, digests[slot])
        s = step("KEY_EXCHANGE", q.key_exchange, slot)
        step("FINISH" + (" (in the clear)" if s.in_clear else ""), q.finish, s)
        rep["kind"] = "certificate (slot %d, handshake %s)" % (slot, "in the clear" if s.in_clear else "encrypted")
        est = sum(x["ms"] for x in steps if x["step"].startswith(("KEY_EXCHANGE", "FINISH")))
    rep["session_id"] = "0x%08X" % s.sid
    rep["secured_message_version"] = "%d.%d" % (s.sm_version >> 12, (s.sm_version >> 8) & 0xF)
    rep["heartbeat_period_s"] = s.heartbeat
    rep["establishment_ms"] = round(est, 1)
    inner = q.in_session(s)
    if slot not in q.chains and q.rsp_flags & R.CAP_CERT:
        # PSK session: the certificate is read inside the session for the signed measurements
        d2 = step("GET_DIGESTS (in session)", inner.get_digests)
        buf2 = step("GET_CERTIFICATE (in session)", inner.get_certificate, slot)
        if root is not None:
            _check_chain(rep, q, buf2, root, d2.get(slot))
        else:
            rep["chain"] = "not checked (no trusted root; the peer is authenticated by the PSK)"
    signed = slot in q.chains
    m = step("GET_MEASUREMENTS (%s, in session)" % ("signed" if signed else "unsigned"), inner.get_measurements,
             0xFF, signed, slot)
    rep["measurements"] = [{"index": b["index"], "type": b.get("type"),
                            "value": b["value"].hex() if isinstance(b["value"], bytes) else str(b["value"])}
                           for b in m["blocks"]]
    if s.heartbeat or q.rsp_flags & (1 << 13):
        step("HEARTBEAT", q.heartbeat, s)
    step("KEY_UPDATE UpdateKey + VerifyNewKey", q.key_update, s)
    step("KEY_UPDATE UpdateAllKeys + VerifyNewKey", q.key_update, s, all_keys=True)
    step("GET_MEASUREMENTS (new keys)", inner.get_measurements, 0, False)
    step("END_SESSION", q.end_session, s)
    rep["total_ms"] = round(sum(x["ms"] for x in steps), 1)
    return rep


def _check_chain(rep, q, buf, root, digest):
    from . import certs

    alg = R.ASYM_TO_ALG[q.asym]
    try:
        certs.validate_chain(buf, q.hash_size, R.HASHES[q.hash][1], alg, q.version, root, digest=digest)
    except certs.ChainError as e:
        raise R.VerificationError("certificate chain: %s" % e)
    rep["chain"] = "valid to the trusted root %s (SHA-256 %s)" % (root.subject.rfc4514_string(),
                                                                 certs.fingerprint(root))


def run(args):
    psk = None
    hint = None
    try:
        hint = pskhint.from_args(args.psk_hint, getattr(args, "psk_hint_hex", None))
    except pskhint.HintError as e:
        print("uspdm session: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    if hint is not None or args.psk_file is not None:
        if hint is None or args.psk_file is None:
            print("uspdm session: a PSK hint (--psk-hint or --psk-hint-hex) and --psk-file go together",
                  file=sys.stderr)
            return EXIT_USAGE
        try:
            with open(args.psk_file, "rb") as f:
                psk = f.read(pskhint.MAX_PSK + 1)
        except OSError as e:
            print("uspdm session: cannot read %s: %s" % (args.psk_file, e), file=sys.stderr)
            return EXIT_USAGE
        if not 1 <= len(psk) <= pskhint.MAX_PSK:
            print("uspdm session: %s is not a PSK of 1-%d bytes" % (args.psk_file, pskhint.MAX_PSK),
                  file=sys.stderr)
            return EXIT_USAGE
    root = None
    if args.root or psk is None or os.path.exists(_default_root()):
        # the same trust default as `uspdm attest`: --root, else the lab CA
        from .verifier import UsageError, load_root

        try:
            root, _ = load_root(args.root)
        except UsageError as e:
            print("uspdm session: %s" % e, file=sys.stderr)
            return EXIT_USAGE
    from . import link as link_mod

    kw = {"timeout": args.timeout}
    if args.eid is not None:
        kw["eid"] = args.eid
    log = None if args.json else (lambda s: (say(s), sys.stdout.flush()))
    rep = {"port": args.port}
    try:
        raw = link_mod.open_link(args.port, **kw)
    except link_mod.Unreachable as e:
        return _done(args, rep, EXIT_UNREACHABLE, "UNREACHABLE: %s: %s" % (e, link_mod.likely_fix(args.port)))
    try:
        link_mod.check_reachable(raw, args.port, args.timeout, "uspdm session")
    except link_mod.Unreachable as e:
        raw.close()
        return _done(args, rep, EXIT_UNREACHABLE, "UNREACHABLE: %s" % e)
    link = LinkAdapter(raw, link_mod.Unreachable)
    try:
        q = SessionRequester(link, version=args.spdm_version, algs=(args.alg,),
                             clear_handshake=args.clear_handshake, timeout=args.timeout,
                             deadline=getattr(args, "deadline", None))
        if psk is not None:
            rep["psk_hint"] = pskhint.escape(hint)
            rep["psk_hint_hex"] = hint.hex()
        if log:
            log("uspdm session: %s session with %s" % (
                ("PSK (hint %s)" % pskhint.show(hint)) if psk is not None else "certificate", args.port))
        rep.update(exercise(q, args.slot, hint, psk, root, log))
        code, verdict = EXIT_OK, "OK"
    except R.DeadlineExceeded as e:
        code, verdict = EXIT_UNREACHABLE, "DEADLINE EXCEEDED: %s" % e
    except R.Unreachable as e:
        code, verdict = EXIT_UNREACHABLE, "UNREACHABLE: %s" % e
    except (R.VerificationError, SessionError) as e:
        code, verdict = EXIT_UNTRUSTED, "VERIFICATION FAILED: %s" % e
    except R.ProtocolError as e:
        code, verdict = EXIT_PROTOCOL, "PROTOCOL ERROR: %s" % e
    finally:
        link.close()
    return _done(args, rep, code, verdict)


def _default_root():
    from . import certs

    return certs.LabCA(certs.default_ca_dir()).root_pem_path


def _done(args, rep, code, verdict):
    rep["result"] = verdict
    rep["exit_code"] = code
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        if code == EXIT_OK:
            say("session: %s, SPDM %s, secured messages %s, id %s, heartbeat %ss" % (
                rep.get("kind"), rep.get("version"), rep.get("secured_message_version"), rep.get("session_id"),
                rep.get("heartbeat_period_s")))
            if "psk_hint_hex" in rep:
                say("PSK hint: %s (hex %s)" % (rep["psk_hint"], rep["psk_hint_hex"]))
            say("established in %.1f ms; %d measurement blocks read inside the session; total %.1f ms" % (
                rep.get("establishment_ms", 0), len(rep.get("measurements", [])), rep.get("total_ms", 0)))
            say("chain: %s" % rep.get("chain", "not read"))
        say("result: %s" % verdict)
    sys.stdout.flush()
    return code
