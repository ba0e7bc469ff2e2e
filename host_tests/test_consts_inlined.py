"""The board modules declare the DSP0274 codes they use as private const()s
(`_ERROR = const(0x7F)`) instead of importing uspdm.consts: every such value must
be the one uspdm.consts declares under the same name (without the underscore)."""
import ast
import os

from uspdm import consts
from uspdm_tools.paths import REPO_ROOT


def _private_consts(path):
    tree = ast.parse(open(path).read())
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("_") and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "const"):
            out[node.targets[0].id[1:]] = ast.literal_eval(node.value.args[0])
    return out


def test_inlined_codes_match_consts():
    checked = 0
    for sub in ("lib/uspdm", "firmware"):
        d = os.path.join(REPO_ROOT, sub)
        for fn in sorted(os.listdir(d)):
            if not fn.endswith(".py") or fn == "consts.py":
                continue
            for name, v in _private_consts(os.path.join(d, fn)).items():
                if hasattr(consts, name):
                    assert getattr(consts, name) == v, "%s/%s: _%s = 0x%X, uspdm.consts.%s = 0x%X" % (
                        sub, fn, name, v, name, getattr(consts, name))
                    checked += 1
    assert checked > 100   # responder, rsp_*, session*, sess_* declare their codes
