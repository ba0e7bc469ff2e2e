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
    "deploy",         # uspdm deploy
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


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception:
        # an unexpected error's text may quote what a device sent: escape it like every report
        import traceback

        from .screen import line

        for ln in traceback.format_exc().splitlines():
            sys.stderr.write(line(ln + "\n"))
        return 1


if __name__ == "__main__":
    sys.exit(main())
