"""`uspdm` command line: one entry point, one subcommand per module.

Each module named in SUBCOMMANDS defines `register(subparsers)`, which adds
its parser and sets `func` (called with the parsed args; its return value is
the exit code).
"""
import argparse
import importlib
import sys

SUBCOMMANDS = (
    "cmd_mpy",        # uspdm mpy: run code on the host MicroPython
    "sim",            # uspdm sim: the simulated board
    "lab",            # uspdm lab: the attestation lab in a browser
    "cmd_mctp",       # uspdm mctp: probe an MCTP endpoint
    "provision",      # uspdm provision
    "verifier",       # uspdm attest / uspdm golden
    "cmd_session",    # uspdm session
    "enroll",         # uspdm enroll
    "deploy",         # uspdm deploy
    "cmd_bridge",     # uspdm bridge: spdm-emu's socket protocol relayed to a board
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit 2 means "unreachable" for the board commands."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, "%s: error: %s\n" % (self.prog, message))


def build_parser():
    ap = _Parser(prog="uspdm", description="uspdm: SPDM responder for microcontrollers, host tools")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module("uspdm_tools." + name)
        except ImportError as e:
            if getattr(e, "name", None) == "uspdm_tools." + name:
                continue  # not built yet
            raise
        mod.register(sub)
    return ap


class _PipeSafe:
    """stdout that survives a reader going away (`uspdm attest | head -1`):
    the rest of the output is dropped and the command still ends with its own
    exit status, instead of a BrokenPipeError traceback and exit 1."""

    def __init__(self, f):
        self._f = f
        self.broken = False

    def _gone(self):
        self.broken = True
        try:
            import os

            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self._f.fileno())   # Python's own flush at exit finds /dev/null
            os.close(fd)
        except (OSError, ValueError):
            pass

    def write(self, s):
        if self.broken:
            return len(s)
        try:
            return self._f.write(s)
        except BrokenPipeError:
            self._gone()
            return len(s)

    def flush(self):
        if self.broken:
            return
        try:
            self._f.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name):
        return getattr(self._f, name)


def main(argv=None):
    from . import exitcodes

    if not isinstance(sys.stdout, _PipeSafe):
        sys.stdout = _PipeSafe(sys.stdout)
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        if not getattr(args, "func", None):
            ap.print_help(sys.stderr)
            sys.stderr.write("uspdm: error: a command is needed (uspdm COMMAND --help for one)\n")
            return exitcodes.USAGE
        return args.func(args) or 0
    except KeyboardInterrupt:
        sys.stderr.write("\nuspdm: interrupted\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        getattr(sys.stdout, "_gone", lambda: None)()
        return exitcodes.OK
    except Exception:
        # an unexpected error's text may quote what a device sent: escaped like every report
        import traceback

        from .screen import line

        for ln in traceback.format_exc().rstrip("\n").split("\n"):
            sys.stderr.write(line(ln + "\n"))
        return exitcodes.USAGE


if __name__ == "__main__":
    sys.exit(main())
