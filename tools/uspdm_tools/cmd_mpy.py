"""uspdm mpy: run a file or a snippet on real MicroPython (wasm, under Node) with lib/ importable."""
import sys

from .mpy import MicroPython, MicroPythonError


def register(sub):
    from . import exitcodes as X

    p = sub.add_parser("mpy", help="run Python code on the host MicroPython (wasm) with lib/ importable",
                       epilog="exit status:\n  N    the code's own: sys.exit(N) passes through (0 when it ends normally)\n"
                              "  1    an uncaught exception in the code, or a usage/local error (missing file, "
                              "no `make setup`)\n  130  interrupted (Ctrl-C)\n",
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="a .py file to run ('-' for stdin)")
    p.add_argument("-c", dest="code", help="code to run")
    p.add_argument("--heap", action="store_true", help="report the heap the code allocated")
    p.set_defaults(func=run)


def run(args):
    from .mpy import MicroPythonUnavailable

    if args.code is not None:
        code = args.code
    elif args.file in (None, "-"):
        code = sys.stdin.read()
    else:
        try:
            with open(args.file) as f:
                code = f.read()
        except (OSError, UnicodeDecodeError) as e:
            print("uspdm mpy: cannot read %s: %s" % (args.file, getattr(e, "strerror", None) or e), file=sys.stderr)
            return 1
    try:
        mp = MicroPython()
    except MicroPythonUnavailable as e:
        print("uspdm mpy: %s" % e, file=sys.stderr)
        return 1
    with mp:
        try:
            r = mp.run(code, measure=args.heap)
        except MicroPythonError as e:
            if e.out:
                print(e.out)
            print(e.traceback, file=sys.stderr, end="")
            return 1
        if r.out:
            print(r.out)
        if args.heap:
            print("heap: allocated %d bytes (upper bound of peak), %d bytes still live" % (r.alloc, r.live),
                  file=sys.stderr)
    return r.exit if r.exit is not None else 0
