"""Build the board's SPDM context: identity, measurements, DRBG, responder config.

Measurement indices (stable; README "Measurements"):
  1..0x3E  one digest per firmware file that runs (firmware/, board files, lib/),
           sorted by label; files beyond 0x3E share one digest at 0x3F
  0x40     board configuration digest (DMTF type 3)
  0x41     MicroPython version string, raw (type 6)
  0x42     board / MCU description, raw (type 2)
  0x43     security version number, u64 LE raw (type 7)
  0xFE     device mode (type 5)
"""
import sys

from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm import session as _session
from uspdm.responder import Config, Responder

SVN = 1


def build_measurements(board):
    m = Measurements()
    files = board.measured_files()
    index = 1
    rest = []
    for label, path in files:
        if index <= 0x3E:
            m.add_file(index, path)
            index += 1
        else:
            rest.append(path)
    if rest:
        m.add_files(0x3F, rest)
    cfg = board.config()
    m.add_digest(0x40, 3, _config_bytes(cfg), tcb=True)
    impl = sys.implementation
    ver = "%s %s; %s" % (impl.name, ".".join(str(x) for x in impl.version[:3]), sys.version)
    m.add_raw(0x41, 6, ver.encode())
    m.add_raw(0x42, 2, ("board=%s mcu=%s" % (board.NAME, board.MCU)).encode())
    m.add_svn(0x43, cfg.get("svn", SVN))
    m.add_device_mode()
    return m


def _config_bytes(cfg):
    keys = sorted(cfg)
    return ";".join("%s=%r" % (k, cfg[k]) for k in keys).encode()


class SpdmContext:
    def __init__(self, board, log=print):
        self.board = board
        self.drbg = board.drbg()
        self.identity = Identity(board.storage(), self.drbg)
        self.measurements = build_measurements(board)
        cfg = board.config()
        c = Config()
        if "asym_priority" in cfg:
            c.asym_priority = list(cfg["asym_priority"])
        if "ct_exponent" in cfg:
            c.ct_exponent = cfg["ct_exponent"]
        if "defer_signing" in cfg:
            c.defer_signing = cfg["defer_signing"]
        _session.configure(c)   # sessions: DHE secp384r1, AES-256-GCM, SPDM key schedule
        self.config = c
        self.sessions = _session.from_board(self.drbg, board.storage(), cfg, log=log,
                                            vendor_hook=getattr(board, "vendor_defined", None),
                                            ticks_diff=getattr(board, "ticks_diff", None))
        provisioned = [a for a in ("p384", "p256") if self.identity.provisioned_mask(a)]
        log("spdm: identity provisioned for %s; %d measurement blocks" % (
            ", ".join(provisioned) if provisioned else "nothing (run `uspdm provision`)",
            self.measurements.count()))

    def new_responder(self):
        r = Responder(self.identity, self.measurements, self.drbg, self.config)
        return _session.attach(r, self.sessions)


def build_context(board, log=print):
    return SpdmContext(board, log)
