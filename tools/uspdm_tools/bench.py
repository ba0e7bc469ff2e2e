"""`make bench`: figures, never assertions.

Runs every `uspdm_tools.bench_<area>` module's `run()` in the order below; each
prints its own section (a title line, then aligned `name  value  unit` rows,
ratios where a comparison exists).  `python -m uspdm_tools.bench AREA...` runs
only those areas.
"""
import importlib
import sys
import time

AREAS = ("crypto", "ecc", "chip", "m0", "mctp", "flow", "session")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    areas = argv or AREAS
    t0 = time.monotonic()
    for area in areas:
        try:
            mod = importlib.import_module("uspdm_tools.bench_" + area)
        except ImportError as e:
            if getattr(e, "name", None) == "uspdm_tools.bench_" + area:
                continue
            raise
        mod.run()
        sys.stdout.flush()
    print("\nbench done in %.1f s" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
