"""Serving a board's transports at the same time: USB serial and I2C.

A cooperative loop (no threads, no asyncio: every step is short, the SPDM
responder signs in slices through Device.idle()):

    svc = Service(device=dev, port=i2c_port)      # a responder (PRoT)
    svc = Service(bridge=Bridge(i2c_port, 0x1D))  # a USB-to-I2C bridge
    out = svc.serial_in(data)   # bytes from the USB serial -> bytes to write back
    out = svc.step()            # drain the I2C queue, advance deferred work -> serial bytes
    svc.pending()               # more work waiting (do not sleep)

The Device keeps one SPDM responder state per requester EID whichever
transport the requester uses; responses to I2C requesters are master writes
to their source address.  `run(board, dev)` is the real boards' entry
(board.serve(dev) calls it): it reads the settings, opens I2C when the port
can (a clear message and USB-serial-only otherwise), and runs the USB
serial loop of usb_serial.py.
"""


class Service:
    def __init__(self, device=None, port=None, bridge=None, budget=4):
        self.device = device
        self.port = port
        self.bridge = bridge
        self.budget = budget   # I2C transfers handled per step

    def serial_idle(self):
        if self.bridge is not None:
            return self.bridge.serial_idle()
        return self.device.decoder.buffered() <= 1  # a lone flag: no frame data yet

    def serial_in(self, data, write=None):
        """Serial bytes in; bytes to write back (write: the port's write function,
        given each answer frame as it is made; then b'' is returned)."""
        if self.bridge is not None:
            return self.bridge.serial_in(data)
        return self.device.feed(data, write)

    def step(self, write=None):
        """One slice of the board's work; bytes to write on the serial (write: the
        port's write function, given answer frames as they are made)."""
        if self.bridge is not None:
            return self.bridge.step()
        dev = self.device
        port = self.port
        if port is not None:
            for _ in range(self.budget):
                r = port.recv()
                if r is None:
                    break
                for a, p in dev.feed_i2c(r[0], r[1]):
                    port.send(a, p)
        out = dev.idle(write)
        q = dev.i2c_out
        while q:
            a, p = q.pop(0)
            if port is not None:
                port.send(a, p)
        return out

    def pending(self):
        if self.bridge is not None:
            return self.bridge.pending()
        if self.port is not None and self.port.pending():
            return True
        return bool(self.device.i2c_out) or self.device.pending()


def build(board, dev, machine_mod, log):
    """The Service for this board's settings: (service, description)."""
    cfg = board.config()
    mode = cfg.get("mode", "responder")
    if not cfg.get("i2c", True):
        return Service(device=dev), "USB serial only (I2C disabled in the settings)"
    import time

    from i2c import open_port

    port, why = open_port(machine_mod, cfg, sleep_ms=getattr(time, "sleep_ms", None), log=log)
    if port is None:
        if mode == "bridge":
            log("uspdm: bridge mode needs I2C: " + why)
        return Service(device=dev), "USB serial only: " + why
    if mode == "bridge":
        from bridge import Bridge

        br = Bridge(port, cfg.get("bridge_target", 0x1D), cfg.get("bridge_eid", 0xFE),
                    now=board.ticks_ms, log=log)
        return Service(bridge=br), "bridge: USB serial <-> I2C 0x%02x (own 0x%02x, capture %s)" % (
            br.target, port.addr, port.cap.mode)
    return Service(device=dev, port=port), "USB serial + I2C target 0x%02x (capture %s, %d Hz)" % (
        port.addr, port.cap.mode, cfg.get("i2c_freq", 100000))


def repl_escape(cfg):
    """The line escape to the REPL (\\r\\x03 on the USB serial) is a lab
    setting, off unless the board's settings say repl_escape=1: the REPL
    reads the device key, so by default it takes physical presence (the
    boot button during the first second after reset)."""
    return cfg.get("repl_escape", 0) in (1, "1", True)


def run(board, dev):
    """Serve forever on a real board; returns only on the REPL escape."""
    import time

    import micropython
    import usb_serial

    try:
        import machine
    except ImportError:
        machine = None
    log = dev.log if dev is not None else print
    svc, what = build(board, dev, machine, log)
    cfg = board.config()
    print("uspdm: serving MCTP: " + what)
    escape = repl_escape(cfg)
    print("uspdm: to reach the REPL: hold %s during the first second after reset%s" % (
        getattr(board, "BUTTON", "the boot button"),
        ", or send \\r\\x03 (mpremote does; repl_escape=1, a lab setting)" if escape else ""))
    if dev is not None:
        dev._log = usb_serial.log_line   # stdout is the MCTP channel from now on
    led = getattr(board, "led", None)
    r = usb_serial.serve(svc, usb_serial.UsbSerial(), time.ticks_ms, time.ticks_diff, time.sleep_ms,
                         escape=escape, quiet_ms=cfg.get("repl_escape_quiet_ms", 100),
                         kbd_intr=micropython.kbd_intr, led=led)
    print("\r\nuspdm: stopped (%s); REPL.  usb_serial.LOG has the log; machine.reset() restarts." % r)
    return r
