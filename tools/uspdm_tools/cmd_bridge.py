"""uspdm bridge: DMTF's tools against a real board.

    uspdm bridge --emu-port 2323 --port /dev/ttyACM0                 # a board on USB serial (DSP0253)
    uspdm bridge --emu-port 2323 --port /dev/ttyACM1 --via-i2c 0x1D  # a PRoT behind a uspdm I2C bridge board

Serves spdm-emu's socket protocol (the platform port that spdm_requester_emu
and spdm_device_validator_sample connect to, MCTP transport) and relays every
NORMAL message to the board as an MCTP message (type byte and body) over the
serial link, the board's answer back.  One client after another; a client's
SHUTDOWN stops the bridge as it stops spdm_responder_emu (CONTINUE, or
--emu-keep-serving, serve the next one).

Exit status: 0 stopped (SHUTDOWN, Ctrl-C), 1 usage, 2 board unreachable.
"""
import argparse
import select
import signal
import sys
import time

from . import emu as emu_mod


def register(sub):
    p = sub.add_parser("bridge", help="serve DMTF spdm-emu's socket protocol and relay it to a board",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the board (or a pyserial URL, a simulator's pty)")
    p.add_argument("--emu-port", type=int, default=emu_mod.DEFAULT_PORT, metavar="N",
                   help="TCP port of the spdm-emu platform port (default %d, DMTF's tools' default; 0 picks "
                        "a free one)" % emu_mod.DEFAULT_PORT)
    p.add_argument("--emu-host", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--via-i2c", type=lambda s: int(s, 0), default=None, metavar="ADDR",
                   help="reach the PRoT at this I2C address through a uspdm bridge board on --port")
    p.add_argument("--eid", type=int, default=None, help="MCTP endpoint ID of the board (default: the null EID)")
    p.add_argument("--emu-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the board's answer to one message before replying empty "
                        "(default 60)")
    p.add_argument("--emu-keep-serving", action="store_true",
                   help="a client's SHUTDOWN ends only that client")
    p.add_argument("-v", "--verbose", action="store_true", help="log every relayed message")
    p.set_defaults(func=run)


def _log(msg):
    sys.stderr.write("%s uspdm bridge: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def run(args):
    from . import link as link_mod

    kw = {"timeout": min(args.emu_timeout, 10.0)}
    if args.eid is not None:
        kw["eid"] = args.eid
    if args.via_i2c is not None:
        kw["via_i2c"] = args.via_i2c
    try:
        link = link_mod.SerialLink(args.port, **kw)
    except link_mod.Unreachable as e:
        _log("UNREACHABLE: %s" % e)
        return 2
    srv = None

    def relay(body):
        try:
            rsp = link.request(body, timeout=args.emu_timeout)
        except link_mod.Unreachable as e:
            _log("no answer from the board to MCTP type 0x%02x (%s): replied empty" % (body[0], e))
            rsp = b""
        except ValueError as e:
            _log("bad answer from the board (%s): replied empty" % e)
            rsp = b""
        if args.verbose:
            _log("type 0x%02x %s -> %s" % (body[0], body[1:3].hex(), rsp[:3].hex() if rsp else "nothing"))
        srv.reply(rsp)

    try:
        srv = emu_mod.EmuServer(args.emu_host, args.emu_port, relay, log=_log, timeout=args.emu_timeout + 5,
                                keep_serving=args.emu_keep_serving)
    except OSError as e:
        link.close()
        _log("cannot listen on %s:%d: %s" % (args.emu_host, args.emu_port, e.strerror or e))
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *a: stopping.append(1))
    where = args.port + (" -> I2C 0x%02x" % args.via_i2c if args.via_i2c is not None else "")
    print("uspdm bridge: spdm-emu platform port %s (MCTP) -> %s" % (srv.addr, where))
    print("uspdm bridge: e.g. spdm_requester_emu --trans MCTP, spdm_device_validator_sample, "
          "or uspdm attest --port emu://%s" % srv.addr)
    sys.stdout.flush()
    try:
        while not stopping and not srv.stop:
            try:
                r, _, _ = select.select(srv.fds(), [], [], 0.5)
            except InterruptedError:
                continue
            for f in r:
                srv.handle(f)
            srv.tick()
    finally:
        srv.close()
        link.close()
    st = srv.stats
    _log("stopped: %d clients, %d messages relayed, %d unanswered" % (st["clients"], st["requests"], st["timeouts"]))
    return 0
