"""uspdm mctp: probe an MCTP endpoint over a serial port (EID, message types, versions)."""
import json
import sys
import time

from .link import SerialLink, Unreachable, likely_fix, open_link
from .screen import say

TYPE_NAMES = {0x00: "MCTP control", 0x05: "SPDM", 0x06: "secured SPDM", 0xFF: "MCTP base"}
EP_TYPES = {0: "simple endpoint", 1: "bus owner/bridge"}


def register(sub):
    from . import exitcodes as X

    p = sub.add_parser("mctp", help="probe an MCTP endpoint: EID, supported message types and versions",
                       epilog=X.epilog("the endpoint answered the probe (and --set-eid was accepted)",
                                       X.USAGE, X.UNREACHABLE, X.PROTOCOL),
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port (/dev/ttyACM0, a sim pty, socket://host:port)")
    from . import argtypes as T

    p.add_argument("--eid", type=T.eid, default=0, help="target EID (default 0: null, any endpoint)")
    p.add_argument("--set-eid", type=T.assignable_eid, metavar="EID", help="assign this EID (Set Endpoint ID, 8-254)")
    p.add_argument("--timeout", type=T.seconds, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--deadline", type=T.seconds, default=60.0,
                   help="seconds the whole probe may take, however the endpoint answers (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def version_str(entry):
    def bcd(b):
        return "%d" % (b & 0x0F) if (b & 0xF0) == 0xF0 else "%d" % b
    major, minor, update, alpha = entry
    s = bcd(major) + "." + bcd(minor)
    if update != 0xFF and (update & 0xF0) == 0xF0:
        s += "." + bcd(update)
    return s


class _Bounded:
    """link.control with every timeout cut to what is left of an overall deadline."""

    def __init__(self, link, deadline, clock=time.monotonic):
        self.link = link
        self.clock = clock
        self.deadline = deadline
        self.at = None if deadline is None else clock() + deadline

    def control(self, command, data=b"", eid=None):
        timeout = self.link.timeout
        if self.at is not None:
            left = self.at - self.clock()
            if left <= 0:
                raise Unreachable("probe not done within the overall deadline of %g s" % self.deadline)
            timeout = min(timeout, left)
        return self.link.control(command, data, eid=eid, timeout=timeout)


def probe(link, eid=None, deadline=None):
    info = {}
    link = _Bounded(link, deadline)
    cc, data = link.control(0x02, eid=eid)
    if cc != 0 or len(data) < 2:
        raise ValueError("Get Endpoint ID failed (completion code %d)" % cc)
    info["eid"] = data[0]
    info["endpoint_type"] = EP_TYPES.get((data[1] >> 4) & 3, "type %d" % ((data[1] >> 4) & 3))
    info["eid_type"] = ["dynamic", "static", "static (current)", "static (differs)"][data[1] & 3]
    cc, data = link.control(0x05, eid=eid)
    types = list(data[1:1 + data[0]]) if cc == 0 and data else []
    info["message_types"] = types
    versions = {}
    for t in [0xFF] + types:
        cc, data = link.control(0x04, bytes((t,)), eid=eid)
        if cc == 0 and data:
            n = data[0]
            versions[t] = [version_str(data[1 + 4 * i:5 + 4 * i]) for i in range(n) if len(data) >= 5 + 4 * i]
        else:
            versions[t] = None
    info["versions"] = versions
    return info


def _json_error(args, verdict, e, code):
    """With --json a failure is a JSON document on stdout too (the same text as stderr)."""
    if args.json:
        sys.stdout.write(json.dumps({"port": args.port, "verdict": verdict, "reason": str(e), "exit_code": code},
                                    indent=2) + "\n")
    return code


def run(args):
    try:
        opener = open_link if str(args.port).startswith("emu://") else SerialLink
        with opener(args.port, eid=args.eid, timeout=args.timeout) as link:
            if args.set_eid is not None:
                cc, data = link.control(0x01, bytes((0x00, args.set_eid)))
                if cc != 0:
                    say("Set Endpoint ID %d refused (completion code %d)" % (args.set_eid, cc), file=sys.stderr)
                    return 3
                accepted = ((data[0] >> 4) & 3) == 0
                say("Set Endpoint ID: %s, EID now %d" % ("accepted" if accepted else "rejected", data[1]))
                link.eid = data[1]
            info = probe(link, deadline=getattr(args, "deadline", None))
    except Unreachable as e:
        e = Unreachable("%s on %s: %s" % (e, args.port, likely_fix(args.port)))
        say("unreachable: %s" % e, file=sys.stderr)
        return _json_error(args, "UNREACHABLE", e, 2)
    except ValueError as e:
        say("protocol error: %s" % e, file=sys.stderr)
        return _json_error(args, "PROTOCOL ERROR", e, 3)
    if args.json:
        out = dict(info)
        out["versions"] = {"0x%02x" % k: v for k, v in info["versions"].items()}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    say("MCTP endpoint on %s" % args.port)
    say("  EID            %d (%s, %s)" % (info["eid"], info["eid_type"], info["endpoint_type"]))
    say("  message types  %s" % ", ".join("0x%02x %s" % (t, TYPE_NAMES.get(t, "")) for t in info["message_types"]))
    for t, v in info["versions"].items():
        say("  %-14s %s" % (TYPE_NAMES.get(t, "0x%02x" % t), ", ".join(v) if v else "not supported"))
    return 0
