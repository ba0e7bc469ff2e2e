"""Code loaded on demand, and dropped again when memory runs short.

On a board without a ROMFS partition, importing a module copies its bytecode
into the heap, and it stays there as long as anything refers to the module.
The request handlers used once per connection (uspdm.rsp_*), the session
handshakes (uspdm.sess_*) and the session stack itself are loaded when a
request needs them, through `need()`, and forgotten with `drop()`:

    m = need("rsp_cert")          # imports uspdm.rsp_cert (cached)
    m.get_certificate(r, msg)     # look functions up on each call, never keep them
    drop()                        # forget every unpinned demand module; the GC frees its code

A module is dropped from sys.modules and from its package, so the next
`need()` imports it afresh.  `pin(leaf)` / `unpin(leaf)` keep a module while
something refers to it (a deferred generator, a live session object): dropping
it then would free nothing and a re-import would hold a second copy.
Demand modules import only resident modules at their top level, keep no state
of their own and register nothing, so dropping one loses nothing.
"""
import gc
import sys

_cache = {}   # leaf -> module
_pins = {}    # leaf -> pin count
_deps = {}    # leaf -> modules its import loaded (dropped with it)
stats = {"loads": 0, "drops": 0}


def need(leaf, pkg="uspdm", first=()):
    """The module pkg.leaf, imported if needed.  first: modules (full names) its
    import loads anyway, imported before it, largest first, while the heap's
    largest free blocks are still there (a module's code is copied into the heap
    in pieces as large as its largest function; the small pieces of the modules
    imported last then fill the smaller holes)."""
    m = _cache.get(leaf)
    if m is None:
        name = pkg + "." + leaf
        m = sys.modules.get(name)
        if m is None:
            before = set(sys.modules)
            try:
                for f in first:
                    if f not in sys.modules:
                        gc.collect()
                        __import__(f)
                gc.collect()
                m = __import__(name, None, None, (leaf,))
            except BaseException:
                # a failed import (out of memory half-way) leaves nothing behind: the
                # modules it loaded before failing would otherwise stay, unreachable by drop()
                for k in list(sys.modules):
                    if k not in before:
                        forget(k)
                raise
            stats["loads"] += 1
            # what this import brought in with it (uspdm.session: keysched,
            # secured, AES-GCM, ...) goes when it goes
            pre = pkg + "."
            _deps[leaf] = [k for k in sys.modules if k not in before and k != name and k.startswith(pre)]
        _cache[leaf] = m
    return m


def warm(leaves, first=(), then=None):
    """Import leaves once and drop them again: the names their code uses are interned
    now.  MicroPython keeps interned names (qstrs) in pools that double in size and are
    never freed; the pool that a later import would overflow is then allocated here, while
    the heap still has the contiguous room (a 1280-name pool is about 9 KB: on a
    fragmented heap its allocation fails although much more than that is free).
    then(): called while they are loaded.  Returns False when the heap is already too
    short (nothing is kept either way)."""
    try:
        for i in range(len(leaves)):
            need(leaves[i], first=first if i == 0 else ())
        if then is not None:
            then()
        return True
    except MemoryError:
        return False
    finally:
        for k in leaves:
            drop(k, collect=False)
        gc.collect()


def loaded(leaf):
    return leaf in _cache


def pin(leaf):
    _pins[leaf] = _pins.get(leaf, 0) + 1


def unpin(leaf):
    n = _pins.get(leaf, 0) - 1
    if n > 0:
        _pins[leaf] = n
    else:
        _pins.pop(leaf, None)


def drop(leaf=None, pkg="uspdm", collect=True):
    """Forget one demand module (or every unpinned one); returns how many."""
    names = list(_cache) if leaf is None else [leaf]
    n = 0
    for k in names:
        if _pins.get(k) or k not in _cache:
            continue
        del _cache[k]
        forget(pkg + "." + k)
        for d in _deps.pop(k, ()):
            forget(d)
        n += 1
    if n:
        stats["drops"] += n
        if collect:
            gc.collect()
    return n


def forget(full):
    if full in sys.modules:
        del sys.modules[full]
    i = full.rfind(".")
    parent = sys.modules.get(full[:i]) if i > 0 else None
    if parent is not None:
        try:
            delattr(parent, full[i + 1:])
        except (AttributeError, KeyError):   # (MicroPython: KeyError for a module attribute)
            pass


def room_for(n):
    """True when n contiguous bytes can be allocated now (after one
    collection if needed).  The GC never moves objects, so gc.mem_free()
    says nothing about the largest block: this tries it."""
    for _ in range(2):
        try:
            b = bytearray(n)
            del b
            return True
        except MemoryError:
            gc.collect()
    return False


def pinned(leaf, gen):
    """Run generator gen with module `leaf` pinned (a deferred handler)."""
    pin(leaf)
    try:
        return (yield from gen)
    finally:
        unpin(leaf)
