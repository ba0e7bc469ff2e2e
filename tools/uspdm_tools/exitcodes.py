"""One exit-status scheme for every `uspdm` command (each --help lists its own).

    0    success (trusted / provisioned / deployed / done)
    1    usage or local error: bad arguments, unreadable or invalid files,
         a missing setup step (`make setup`), a folder that cannot be used
    2    unreachable: no such port, no answer, the port is busy, --deadline hit
    3    protocol or board-side error: a malformed answer, an SPDM ERROR,
         board code that failed, mpremote that failed on the board
    4    untrusted identity / verification failed
    5    measurement mismatch (identity trusted)
    130  interrupted (Ctrl-C)
"""
OK = 0
USAGE = 1
UNREACHABLE = 2
PROTOCOL = 3
UNTRUSTED = 4
MISMATCH = 5
INTERRUPTED = 130

_TEXT = {
    USAGE: "usage or local error (bad arguments, unreadable files, missing setup)",
    UNREACHABLE: "unreachable: no such port, no answer, port busy, or --deadline reached",
    PROTOCOL: "protocol or board-side error (malformed answer, SPDM ERROR, board code failed)",
    UNTRUSTED: "untrusted: a chain, signature or key check failed",
    MISMATCH: "measurement mismatch (identity trusted)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def epilog(ok, *codes, **override):
    """The 'exit status' block of a command's --help: `ok` says what 0 means;
    codes are the others it uses (their standard meaning unless overridden
    by name, e.g. PROTOCOL="...")."""
    names = {USAGE: "USAGE", UNREACHABLE: "UNREACHABLE", PROTOCOL: "PROTOCOL", UNTRUSTED: "UNTRUSTED",
             MISMATCH: "MISMATCH", INTERRUPTED: "INTERRUPTED"}
    lines = ["exit status:", "  %-3d  %s" % (OK, ok)]
    for c in list(codes) + [INTERRUPTED]:
        lines.append("  %-3d  %s" % (c, override.get(names[c], _TEXT[c])))
    return "\n".join(lines) + "\n"
