"""Untrusted text on the operator's screen.

Anything a device sends (file names in its manifest, certificate subjects and
device-info, error data, exception text built from it) may hold terminal
control sequences: ESC [ 2K erases a line, CR rewrites it, a C1 CSI (0x9B) does
the same on some terminals, U+202E reverses what follows.  `escape` makes every
such character visible as a \\xNN / \\uNNNN escape, so a report line shows what
the device sent instead of doing it.  JSON output needs nothing more: json.dumps
(ensure_ascii) escapes every control and non-ASCII character itself.
"""
import sys
import unicodedata

# categories escaped besides C0/DEL/C1: format characters (bidi overrides, zero width),
# line/paragraph separators, lone surrogates
_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")


def _bad(ch):
    o = ord(ch)
    if o < 0x20 or 0x7F <= o <= 0x9F:
        return True
    if o < 0x80:
        return False
    return unicodedata.category(ch) in _CATEGORIES


def escape(s):
    """`s` with every control/format character replaced by a visible escape."""
    if not isinstance(s, str):
        s = str(s)
    if not any(_bad(c) for c in s):
        return s
    out = []
    for c in s:
        if _bad(c):
            o = ord(c)
            out.append("\\x%02x" % o if o < 0x100 else "\\u%04x" % o)
        else:
            out.append(c)
    return "".join(out)


def line(s):
    """One report line: escapes everything in it except a single trailing newline
    (a newline inside device text must not start a line of its own)."""
    if s.endswith("\n"):
        return escape(s[:-1]) + "\n"
    return escape(s)


class SafeWriter:
    """A stream wrapper whose write() takes whole lines and escapes them (`line`)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s):
        return self.stream.write(line(s))

    def flush(self):
        self.stream.flush()


def say(s, file=None):
    """print() for text that may hold device data: escaped, one line."""
    f = file if file is not None else sys.stdout
    f.write(escape(s) + "\n")
