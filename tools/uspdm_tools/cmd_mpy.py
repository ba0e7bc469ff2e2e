"""uspdm mpy: run a file or a snippet on real MicroPython (wasm, under Node) with lib/ importable."""
import sys

from .mpy import MicroPython, MicroPythonError


def register(sub):
    p = sub.add_parser("mpy", help="run Python code on the host MicroPython (wasm) with lib/ importable")
    p.add_argument("file", nargs="?", help="a .py file to run ('-' for stdin)")
    p.add_argument("-c", dest="code", help="code to run")
    p.add_argument("--heap", action="store_true", help="report the heap the code allocated")
    p.set_defaults(func=run)


def run(args):
    if args.code is not None:
        code = args.code
    elif args.file in (None, "-"):
        code = sys.stdin.read()
    else:
        with open(args.file) as f:
            code = f.read()
    with MicroPython() as mp:
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
    return 0
