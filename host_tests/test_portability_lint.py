"""Static checks of the MicroPython-first rules on lib/, firmware/ and boards/:
constructs that CPython accepts but MicroPython 1.26 does not (or that behave
differently there) are refused here, before a board finds them."""
import ast
import os
import re

import pytest

from uspdm_tools import build_mpy
from uspdm_tools.paths import REPO_ROOT

FORBIDDEN_MODULES = {"dataclasses", "enum", "typing", "abc", "functools", "itertools", "secrets", "hmac",
                     "contextlib", "pathlib"}
FSTRING_DEBUG = re.compile(r"""\bf(["']).*\{[^{}]*=\}""")


def _sources():
    return sorted(build_mpy.sources())


def _problems(rel):
    with open(os.path.join(REPO_ROOT, rel)) as f:
        src = f.read()
    tree = ast.parse(src, rel)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    out.append("line %d: import %s" % (node.lineno, a.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                out.append("line %d: from %s import" % (node.lineno, node.module))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr == "bit_length":
                out.append("line %d: int.bit_length (use compat.bit_length)" % node.lineno)
            elif attr in ("to_bytes", "from_bytes") and node.keywords:
                out.append("line %d: keyword arguments to %s" % (node.lineno, attr))
            elif attr == "hex" and (node.args or node.keywords):
                out.append("line %d: bytes.hex(sep)" % node.lineno)
    for i, line in enumerate(src.splitlines(), 1):
        if FSTRING_DEBUG.search(line):
            out.append("line %d: f-string '=' specifier" % i)
    return out


@pytest.mark.parametrize("rel", _sources())
def test_micropython_portable(rel):
    assert _problems(rel) == []


def test_lint_catches_forbidden(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import dataclasses\nx = 5\ny = x.bit_length()\nz = x.to_bytes(2, byteorder='big')\n"
                   "w = b'ab'.hex(':')\nprint(f'{x=}')\n")
    probs = _problems(str(bad))
    assert len(probs) == 5, probs
