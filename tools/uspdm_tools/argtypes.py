"""argparse types shared by the commands: a bad value is a usage error (exit 1)
with one line saying what is allowed."""
import argparse
import math


def eid(s):
    """An MCTP EID: 0 (the null EID: whatever endpoint is there) or 8-254
    (1-7 are reserved by DSP0236, 255 is broadcast)."""
    try:
        v = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % s)
    if not (v == 0 or 8 <= v <= 254):
        raise argparse.ArgumentTypeError("an EID is 0 (null) or 8-254, got %s" % s)
    return v


def assignable_eid(s):
    """An EID to assign with Set Endpoint ID: 8-254."""
    v = eid(s)
    if v == 0:
        raise argparse.ArgumentTypeError("Set Endpoint ID assigns 8-254, not the null EID 0")
    return v


def seconds(s):
    """A positive, finite number of seconds."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % s)
    if not (v > 0) or math.isinf(v):
        raise argparse.ArgumentTypeError("must be a positive number of seconds, got %s" % s)
    return v


def i2c_addr(s):
    try:
        v = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % s)
    if not 0x01 <= v <= 0x77:
        raise argparse.ArgumentTypeError("a 7-bit I2C address is 0x01-0x77, got %s" % s)
    return v
