"""SPDM flows on the emulated Cortex-M0 (`uspdm sim --m0`): issue 10's flow rows
(attestation, KEY_EXCHANGE + FINISH, signed GET_MEASUREMENTS in a session, boot until
the measurements are ready, longest single step) and issue 9's heap figures per flow.

Exact instruction counts of MicroPython on the RP2040's instruction set, the firmware
as a stock deploy loads it (armv6m .mpy copied into the heap), default board settings,
a provisioned P-384 + P-256 identity; each flow is checked by the host verifier.  A flow
that fails with the stock load is measured again with bytecode in place (ROMFS) and
says so.  Per-operation crypto rows are bench_chip's.

Estimated RP2040 time: 133 MHz at about 1.3 cycles per instruction, 1 k-instr ~ 9.8 us
(no flash wait states or bus contention modelled).  Figures only.

    python -m uspdm_tools.bench m0            # USPDM_M0_BENCH_HEAPS=200k (default 200k,128k)
"""
import os
import sys
import tempfile

from . import m0board
from . import m0flows as F

US_PER_KINSTR = 9.8

# (row, before (issue 10, k-instr), target (k-instr))
ROWS = [
    ("P-384 attestation, SPDM 1.3, all messages", 689440, 150000),
    ("P-256 attestation, same flow", 73778, 40000),
    ("KEY_EXCHANGE + FINISH (P-384, AES-256-GCM)", 1010400, 300000),
    ("signed GET_MEASUREMENTS inside a session", 508000, 100000),
    ("boot until measurements are ready", 3250000, 300000),
    ("longest single step (the board answers nothing meanwhile)", 189315, 20000),
]
SPLIT = ("GET_DIGESTS", "GET_CERTIFICATE", "CHALLENGE", "GET_MEASUREMENTS")


def _t(k):
    s = k * US_PER_KINSTR / 1e6
    return ("%.2f s" % s) if s >= 1 else ("%.0f ms" % (s * 1000))


def _k(v):
    return "{:,}".format(int(v))


def measure(fw, flash, root, flow, load="ram"):
    """(figs, boot records) of one run of flow on a fresh board, or (None, reason)."""
    try:
        with F.M0Run(fw, flash, root, load=load) as b:
            return b.run(flow), b.boot
    except F.FlowError as e:
        first = str(e).split("\n--- board log ---")[0].split("\n")[0].rstrip(":")
        first = first.split(" failed: ", 1)[-1].replace("FlowError: ", "")
        for a in ("p384", "p256"):
            for v in ("1.2", "1.3"):
                first = first.replace("attestation %s %s: " % (a, v), "")
        return None, first[:200]


def _say(msg):
    print(msg)
    sys.stdout.flush()


def run():
    _say("\nSPDM flows on the emulated Cortex-M0 (uspdm sim --m0: armv6m .mpy copied into the heap as a stock "
         "deploy,\n  default settings; k-instr exact; est. RP2040 = 133 MHz at ~1.3 cycles/instr, "
         "1 k-instr ~ %.1f us)" % US_PER_KINSTR)
    fw = m0board.firmware_for("200k")
    why = m0board.check(fw) if fw else "no firmware image (USPDM_M0_FW or ../shared/m0/firmware-h200k.elf)"
    if why:
        _say("  skipped: %s" % why)
        return
    tmp = tempfile.mkdtemp(prefix="uspdm-bench-m0-")
    flash = os.path.join(tmp, "flash")
    root = F.provision(flash, os.path.join(tmp, "ca"))
    first = F.first_boot(fw, flash, root)   # as after a deploy: measures the signing time once, keeps it

    def flow_figs(flow, heap_fw):
        figs, info = measure(heap_fw, flash, root, flow)
        if figs is not None:
            return figs, info, None
        rom, rinfo = measure(heap_fw, flash, root, flow, load="rom")
        return rom, (rinfo if rom is not None else None), info

    results = {}
    for flow in ("attest-p384-1.3", "attest-p256-1.3", "session", "psk"):
        results[flow] = flow_figs(flow, fw)

    _say("  %-64s %11s %11s %11s %11s  %s" % ("flow", "before", "now", "est. RP2040", "target", ""))

    vals = {}
    notes = {}

    def row(i, value, note=""):
        name, before, target = ROWS[i]
        vals[i] = value
        if note.startswith("ROMFS"):
            notes[i] = " (ROMFS: the stock load fails)"
        if value is None:
            _say("  %-64s %11s %11s %11s %11s  %s" % (name, _k(before), "-", "-", "<= " + _k(target), note))
            return
        verdict = "met" if value <= target else "NOT met (x%.1f over)" % (value / target)
        _say("  %-64s %11s %11s %11s %11s  %s%s" % (name, _k(before), _k(value), _t(value), "<= " + _k(target),
                                                    verdict, ("; " + note) if note else ""))

    def load_note(flow):
        figs, _boot, stock_err = results[flow]
        if figs is None:
            return "fails with the stock load (%s) and with ROMFS" % stock_err
        if stock_err:
            return "ROMFS load: the stock load fails (%s)" % stock_err
        return ""

    longest = []
    boot_rec = None
    for i, flow in enumerate(("attest-p384-1.3", "attest-p256-1.3")):
        figs, boot, _err = results[flow]
        row(i, figs["kinstr"] if figs else None, load_note(flow))
        if figs:
            _say("      " + ", ".join("%s %s" % (m, _k(figs["by_request"].get(m, 0))) for m in SPLIT)
                 + ", the rest %s" % _k(figs["kinstr"] - sum(figs["by_request"].get(m, 0) for m in SPLIT)))
            longest.append((figs["longest_step"], "%s, %s" % (flow, figs["longest_step_at"])))
        if boot and boot_rec is None:
            boot_rec = boot
    figs, boot, _err = results["session"]
    ph = figs["phases"] if figs else {}
    row(2, ph.get("KEY_EXCHANGE + FINISH") if figs else None, load_note("session"))
    row(3, ph.get("signed GET_MEASUREMENTS in session") if figs else None, load_note("session"))
    if figs:
        longest.append((figs["longest_step"], "session, %s" % figs["longest_step_at"]))
    if boot and boot_rec is None:
        boot_rec = boot
    figs = results["psk"][0]
    if figs:
        longest.append((figs["longest_step"], "psk, %s" % figs["longest_step_at"]))
    prepared = [r for r in (boot_rec or []) if r.get("event") == "prepared"]
    ready = [r for r in (boot_rec or []) if r.get("event") == "ready"]
    row(4, prepared[0]["kinstr"] if prepared else None,
        ("import and Device %s k-instr, then background digests" % _k(ready[0]["kinstr"])) if ready else "")
    if prepared and prepared[0].get("max_step"):
        longest.append((prepared[0]["max_step"], "boot (SPDM context, digests)"))
    top = max(longest) if longest else None
    row(5, top[0] if top else None, ("in %s; " % top[1] if top else "") + "a step = bytes fed + one idle() slice")
    fp = [r for r in first if r.get("event") == "prepared"] if isinstance(first, list) else []
    if fp:
        _say("      first boot after a deploy (measures the signing time once): %s k-instr until ready, "
             "longest step %s" % (_k(fp[0]["kinstr"]), _k(fp[0]["max_step"])))

    # the same flows with the code in ROMFS (a ROMFS deploy: bytecode and constants in flash)
    rom = {}
    for flow in ("attest-p384-1.3", "attest-p256-1.3", "session", "psk"):
        figs, boot, stock_err = results[flow]
        rom[flow] = (figs, boot) if stock_err else measure(fw, flash, root, flow, load="rom")
    rvals = {}
    rlong = []
    for i, flow in enumerate(("attest-p384-1.3", "attest-p256-1.3")):
        figs = rom[flow][0]
        rvals[i] = figs["kinstr"] if figs else None
        if figs:
            rlong.append(figs["longest_step"])
    figs = rom["session"][0]
    if figs:
        rvals[2] = figs["phases"].get("KEY_EXCHANGE + FINISH")
        rvals[3] = figs["phases"].get("signed GET_MEASUREMENTS in session")
        rlong.append(figs["longest_step"])
    if rom["psk"][0]:
        rlong.append(rom["psk"][0]["longest_step"])
    rboot = [r for r in (rom["attest-p384-1.3"][1] or []) if isinstance(r, dict) and r.get("event") == "prepared"]
    if rboot:
        rvals[4] = rboot[0]["kinstr"]
        rlong.append(rboot[0].get("max_step", 0))
    if rlong:
        rvals[5] = max(rlong)

    try:
        issue_table(vals, results, notes, rvals, top[1] if top else None)
    except Exception as e:   # figures only: say so and go on
        _say("  issue 10 table failed: %r" % (e,))

    heaps = [h for h in os.environ.get("USPDM_M0_BENCH_HEAPS", "200k,128k").split(",") if h in m0board.FW_NAMES]
    _say("\n  heap per flow (issue 9; stock load, one run on a fresh board; live = after a collection)")
    _say("  %-5s %-18s %-8s %10s %14s %13s  %s" % ("heap", "flow", "result", "peak live", "min largest", "k-instr",
                                                   ""))
    for heap in heaps:
        hfw = m0board.firmware_for(heap)
        if not hfw:
            _say("  %-5s (no image %s)" % (heap, m0board.FW_NAMES[heap]))
            continue
        for flow in F.FLOWS:
            if heap == "200k" and flow in results:   # measured above
                stock_err = results[flow][2]
                figs, err = (None, stock_err) if stock_err else (results[flow][0], None)
            else:
                figs, err = measure(hfw, flash, root, flow)
            if figs is None:
                _say("  %-5s %-18s %-8s %10s %14s %13s  %s" % (heap, flow, "FAILS", "-", "-", "-", err))
            else:
                _say("  %-5s %-18s %-8s %10s %14s %13s" % (heap, flow, "ok", "%s B" % _k(figs["peak_live"]),
                                                            "%s B" % _k(figs["min_free"]), _k(figs["kinstr"])))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def issue_table(vals, results, notes=None, rvals=None, longest_at=None):
    """Issue 10's table (every target: MET / NOT MET) from this run's flows and bench_chip's
    per-operation figures, and for every NOT MET row the profile that says why."""
    from . import bench_chip as BC

    ops, prof = BC.results()
    rvals = rvals or {}
    _say("\n  issue 10: every target on the emulated Cortex-M0, k-instr (est. RP2040: 133 MHz, ~1.3 cycles/instr, "
         "no flash wait states);\n  stock = .mpy copied into the heap (mpremote cp), ROMFS = bytecode and "
         "constants in flash (uspdm deploy --to romfs)")
    _say("  %-50s %9s %9s %9s %9s  %-17s %s" % ("operation", "stock", "est.", "ROMFS", "est.", "target", "stock / ROMFS"))
    rows = []
    for name, label, _before, target in BC.ROWS:
        if target and ops.get(name) is not None and not name.startswith("rom_"):
            rows.append((label, ops[name], ops.get("rom_" + name), target, name))
    for i, (label, _before, target) in enumerate(ROWS):
        stock = vals.get(i)
        if notes and notes.get(i):   # the stock load failed: the value is ROMFS's
            stock = None
        rows.append((label, stock, rvals.get(i), target, i))
    notmet = []

    def verdict(v, target):
        if v is None:
            return "fails"
        return "MET" if v <= target else "NOT MET (x%.1f)" % (v / target)

    for label, v, rv, target, key in rows:
        _say("  %-50s %9s %9s %9s %9s  <= %-14s %s / %s" % (
            label[:50], _k(v) if v is not None else "-", _t(v) if v is not None else "-",
            _k(rv) if rv is not None else "-", _t(rv) if rv is not None else "-", _k(target),
            verdict(v, target), verdict(rv, target) if rv is not None else "-"))
        if v is None and rv is not None:
            v = rv
        if v is not None and v > target:
            notmet.append((label, v, target, key))
    if not notmet:
        return
    sf = BC.profile_lines(prof, "sign")[1]
    ef = BC.profile_lines(prof, "ecdh")[1]
    for label, v, target, key in notmet:
        _say("  why not: %s" % label)
        if key in BC.PROFILED:
            lines = BC.profile_lines(prof, BC.PROFILED[key], target)[0]
            rv = ops.get("rom_" + key)
            if rv and key == "p384_sign":
                from uspdm.crypto import ec

                h, vv, b = ec.P384.big
                lines.append("with ROMFS the larger comb table stays in flash (%dx%dx%d: %d doublings + %d additions) "
                             "and the heap has room: %s k-instr (%s)" % (h, vv, b, b - 1, vv * b - 1, _k(rv),
                                                                         "MET" if rv <= target else "NOT MET"))
            elif rv:
                lines.append("with ROMFS (more heap free): %s k-instr (%s)" % (_k(rv), "MET" if rv <= target
                                                                              else "NOT MET"))
        elif key in (0, 1):   # P-384 / P-256 attestation
            curve = ("p384", "p256")[key]
            flow = "attest-%s-1.3" % curve
            figs = results[flow][0] or {}
            br = figs.get("by_request", {})
            sig = br.get("CHALLENGE", 0) + br.get("GET_MEASUREMENTS", 0)
            cf = BC.profile_lines(prof, "sign", None, curve)[1]
            P = curve + "_"
            lines = [
                "two %s signatures (CHALLENGE %s, signed GET_MEASUREMENTS %s k-instr with their hashing) are %.0f%% "
                "of it; the rest of the flow is %s" % ("P-" + curve[1:], _k(br.get("CHALLENGE", 0)),
                                                       _k(br.get("GET_MEASUREMENTS", 0)), 100.0 * sig / v, _k(v - sig)),
                "here each costs about %s, against %s for the same signature with %.0f KB free and %s with %.0f KB "
                "free (profile): the stock load keeps %s B live at the peak, and in that heap the allocator and the "
                "collector (%s k-instr per collection when full) take the difference" % (
                    _k(sig / 2), _k(prof[P + "roomy_sign"]), prof[P + "roomy_free"] / 1024.0, _k(prof[P + "full_sign"]),
                    prof[P + "full_free"] / 1024.0, _k(figs.get("peak_live", 0)), _k(prof[P + "full_gc"])),
            ]
            rv = rvals.get(key)
            if rv:
                lines.append("the same flow with the code in ROMFS (bytecode and the larger comb table in flash, "
                             "more heap free): %s k-instr (%s)" % (_k(rv), "MET" if rv <= target else "NOT MET"))
            lines.append("floor: 2 x %s (a signature's field arithmetic) + %s = %s k-instr against %s: %s" % (
                _k(cf), _k(v - sig), _k(2 * cf + v - sig), _k(target),
                "not reachable with big-int field arithmetic" if 2 * cf + v - sig > target else
                "reachable only with far less allocation and GC (a roomier heap)"))
        elif key == 2:      # KEY_EXCHANGE + FINISH
            kx = ops.get("p384_keygen", 0) + ops.get("p384_ecdh", 0) + ops.get("p384_sign", 0)
            lines = [
                "KEY_EXCHANGE computes a one-time key pair (fixed-base comb, %s k-instr on the chip bench), the ECDH "
                "(%s) and a P-384 signature (%s): %s of the %s" % (
                    _k(ops.get("p384_keygen", 0)), _k(ops.get("p384_ecdh", 0)), _k(ops.get("p384_sign", 0)), _k(kx),
                    _k(v)),
                "floor: comb ~%s + ECDH %s + signature %s = %s k-instr of field arithmetic against %s: not reachable "
                "with big ints (see the ECDH row)" % (_k(sf), _k(ef), _k(sf), _k(2 * sf + ef), _k(target)),
            ]
            if ops.get("rom_p384_ecdh"):
                rk = ops.get("rom_p384_keygen", 0) + ops["rom_p384_ecdh"] + ops.get("rom_p384_sign", 0)
                lines.append("with ROMFS (larger comb table, roomier heap) the same three cost %s + %s + %s = %s "
                             "k-instr on the chip bench" % (_k(ops.get("rom_p384_keygen", 0)), _k(ops["rom_p384_ecdh"]),
                                                           _k(ops.get("rom_p384_sign", 0)), _k(rk)))
        elif key == 3:      # signed GET_MEASUREMENTS inside a session
            figs = results["session"][0] or {}
            lines = [
                "one P-384 signature and its hashing, in the heap of an open session: %s B live at the peak with "
                "the stock load, where the allocator and the collector dominate (the same signature: %s k-instr "
                "with %.0f KB free, %s with %.0f KB free)" % (_k(figs.get("peak_live", 0)), _k(prof["p384_roomy_sign"]),
                                                            prof["p384_roomy_free"] / 1024.0,
                                                            _k(prof["p384_full_sign"]),
                                                            prof["p384_full_free"] / 1024.0),
            ]
            if rvals.get(3):
                lines.append("with ROMFS (session code in flash): %s k-instr (%s)" % (
                    _k(rvals[3]), "MET" if rvals[3] <= target else "NOT MET"))
        elif key == 5:      # longest single step
            lines = [
                "it is in %s, not in EC work (EC slices are at most %s k-instr in the chip bench's heap, row 'longest "
                "slice'): a request handled in one step in a nearly full heap (the stock load imports the session "
                "stack into it at KEY_EXCHANGE and PSK_EXCHANGE one module per idle slice (uspdm.sess_load); the "
                "FINISH and the late answer's encryption are one step each)"
                % (longest_at or "?", _k(ops.get("p384_slice", 0))),
            ]
            if rvals.get(5):
                lines.append("with ROMFS: %s k-instr (%s)" % (_k(rvals[5]), "MET" if rvals[5] <= target else
                                                              "NOT MET"))
        else:
            lines = ["(no profile for this row)"]
        for line in lines:
            _say("    " + line)


if __name__ == "__main__":
    run()
