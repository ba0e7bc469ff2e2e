"""uspdm lab: the attestation lab in a browser.

Serves the lab page (tools/lab/, bundled into build/lab/ by `make setup`)
on localhost -- a secure context, so WebCrypto and Web Serial work -- and
opens it.  The page holds its own verifier (WebCrypto, @peculiar/x509) and
can attest:

  - the board simulated in the page: the real firmware/ and lib/ (served
    live from this checkout at /board-files.json) on the pinned MicroPython
    WebAssembly build, flash in the browser's storage;
  - a real board over Web Serial (Chromium-based browsers);
  - with --port-bridge, a board or `uspdm sim` reached through the WebSocket
    /bridge this server offers: a serial port (/dev/ttyACM0), or TCP
    (HOST:PORT, tcp:HOST:PORT or socket://HOST:PORT, e.g. `uspdm sim --tcp`).
    One page at a time holds the bridge; another gets "busy".

Everything the page loads comes from this server: no network is needed.
"""
import argparse
import base64
import hashlib
import json
import mimetypes
import os
import socket
import struct
import subprocess
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .paths import REPO_ROOT

BUILD_DIR = os.path.join(REPO_ROOT, "build", "lab")
SRC_DIR = os.path.join(REPO_ROOT, "tools", "lab")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# (tree or file in the checkout, where the page's MicroPython sees it); the lab board
# module reuses the simulated board's, mounted beside it as simboard.py
BOARD_TREES = (("lib", "/lib"), ("firmware", "/firmware"), ("boards/web", "/board"),
               ("boards/sim/board.py", "/board/simboard.py"))


def register(sub):
    p = sub.add_parser("lab", help="the attestation lab: a page that attests a board and shows every message",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port-bridge", metavar="SERIAL_OR_TCP", default=None,
                   help="offer this board to the page over a WebSocket: a serial port or HOST:PORT "
                        "(e.g. the TCP port of `uspdm sim --tcp 127.0.0.1:5555`)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where to serve the page (default 127.0.0.1 on a free port). The page needs a secure "
                        "context, which plain http has only on localhost: other machines must start Chromium "
                        "with --unsafe-treat-insecure-origin-as-secure=http://HOST:PORT")
    p.add_argument("--url-file", metavar="FILE", help="write the page's URL to FILE once serving")
    p.set_defaults(func=run)


# ------------------------------------------------------------------ bundle

def _newest(path):
    t = 0.0
    for dp, dns, fns in os.walk(path):
        dns[:] = [d for d in dns if d not in ("node_modules", "__pycache__")]
        for f in fns:
            try:
                t = max(t, os.path.getmtime(os.path.join(dp, f)))
            except OSError:
                pass
    return t


def bundle_stale():
    stamp = os.path.join(BUILD_DIR, "lab.js")
    if not os.path.exists(stamp):
        return True
    return _newest(SRC_DIR) > os.path.getmtime(stamp)


def build_bundle(quiet=False):
    """Bundle the page with esbuild (node_modules from `make setup`). Raises RuntimeError."""
    from .mpy import node_path

    esb = os.path.join(REPO_ROOT, "node_modules", "esbuild")
    if not os.path.isdir(esb):
        raise RuntimeError("the lab page's npm packages are missing: run `make setup`")
    p = subprocess.run([node_path(), os.path.join(SRC_DIR, "build.mjs")], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("building the lab page failed:\n" + (p.stderr or p.stdout)[-3000:])
    if not quiet and p.stdout.strip():
        print(p.stdout.strip(), file=sys.stderr)


def board_files():
    """{fs path: base64} of the code the in-page board runs (this checkout's, live)."""
    out = {}
    for rel, dst in BOARD_TREES:
        root = os.path.join(REPO_ROOT, rel)
        if os.path.isfile(root):
            with open(root, "rb") as fh:
                out[dst] = base64.b64encode(fh.read()).decode()
            continue
        for dp, dns, fns in os.walk(root):
            dns[:] = sorted(d for d in dns if d != "__pycache__" and not d.startswith("."))
            for f in sorted(fns):
                if not f.endswith(".py"):
                    continue
                full = os.path.join(dp, f)
                sub = os.path.relpath(full, root).replace(os.sep, "/")
                with open(full, "rb") as fh:
                    out[dst + "/" + sub] = base64.b64encode(fh.read()).decode()
    return out


# ------------------------------------------------------------------ bridge

BRIDGE_HANDOVER_S = 2.0   # how long a new page waits for the previous one to release the bridged board


def open_bridge(target, timeout=5.0):
    """SERIAL_OR_TCP -> an object with read(n) (returns b'' on timeout), write(), close()."""
    t = target
    if t.startswith("socket://"):
        t = t[len("socket://"):]
    elif t.startswith("tcp:"):
        t = t[4:]
    if not t.startswith("/") and ":" in t and t.rsplit(":", 1)[1].isdigit():
        host, port = t.rsplit(":", 1)
        s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        s.settimeout(0.2)
        return _SockPort(s)
    import serial

    return serial.serial_for_url(target, baudrate=115200, timeout=0.2)


class _SockPort:
    def __init__(self, s):
        self.s = s

    def read(self, n):
        try:
            d = self.s.recv(n)
        except socket.timeout:
            return b""
        if not d:
            raise OSError("the bridged TCP port closed the connection")
        return d

    def write(self, data):
        self.s.sendall(data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return hdr + payload


def ws_read(rfile, max_len=1 << 20):
    """One client frame -> (opcode, payload); None at EOF. Client frames are masked (RFC 6455)."""
    h = rfile.read(2)
    if len(h) < 2:
        return None
    op = h[0] & 0x0F
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    if n > max_len:
        raise ValueError("WebSocket frame of %d bytes" % n)
    mask = rfile.read(4) if h[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(n)
    if len(data) < n:
        return None
    return op, bytes(b ^ mask[i & 3] for i, b in enumerate(data))


class LabServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, bridge=None, log=None):
        self.bridge = bridge
        self.bridge_lock = threading.Lock()
        self.logf = log or sys.stderr
        ThreadingHTTPServer.__init__(self, addr, Handler)

    def log(self, msg):
        try:
            self.logf.write("uspdm lab: %s\n" % msg)
            self.logf.flush()
        except (OSError, ValueError):
            pass


class Handler(BaseHTTPRequestHandler):
    server_version = "uspdm-lab"
    protocol_version = "HTTP/1.1"   # RFC 6455 wants an HTTP/1.1 101 for the bridge

    def log_message(self, fmt, *args):   # quiet: the page is the interface
        pass

    def _send(self, code, body, ctype="text/plain; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/bridge":
            return self._bridge()
        if path == "/board-files.json":
            return self._send(200, json.dumps(board_files()).encode(), "application/json")
        if path == "/config.json":
            cfg = {"bridge": self.server.bridge, "version": 1}
            return self._send(200, json.dumps(cfg).encode(), "application/json")
        if path == "/":
            path = "/index.html"
        rel = os.path.normpath(path.lstrip("/"))
        if rel.startswith("..") or os.path.isabs(rel):
            return self._send(404, b"not found")
        full = os.path.join(BUILD_DIR, rel)
        if not os.path.isfile(full):
            return self._send(404, b"not found")
        ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if full.endswith((".js", ".mjs")):
            ctype = "text/javascript; charset=utf-8"
        elif full.endswith(".wasm"):
            ctype = "application/wasm"
        with open(full, "rb") as f:
            self._send(200, f.read(), ctype)

    # -- WebSocket <-> serial/TCP ---------------------------------------
    def _bridge(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self._send(400, b"WebSocket only")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(key))
        self.end_headers()
        self.wfile.flush()
        srv = self.server

        def close(code, why):
            try:
                self.wfile.write(ws_frame(8, struct.pack("!H", code) + why.encode()[:120]))
                self.wfile.flush()
            except OSError:
                pass

        if not srv.bridge:
            return close(1008, "this uspdm lab has no --port-bridge")
        # the page closes its previous connection just before opening the next one: give that
        # one a moment to let go of the board before telling this page it is busy
        if not srv.bridge_lock.acquire(timeout=BRIDGE_HANDOVER_S):
            return close(1013, "busy: another page holds the bridged board")
        port = None
        stop = threading.Event()
        wlock = threading.Lock()
        try:
            try:
                port = open_bridge(srv.bridge)
            except Exception as e:
                return close(1011, "cannot open %s: %s" % (srv.bridge, e))
            srv.log("page connected to the bridged board %s" % srv.bridge)

            def pump():
                while not stop.is_set():
                    try:
                        d = port.read(4096)
                    except Exception as e:
                        srv.log("bridge: %s" % e)
                        break
                    if d:
                        try:
                            with wlock:
                                self.wfile.write(ws_frame(2, d))
                                self.wfile.flush()
                        except OSError:
                            break
                stop.set()

            th = threading.Thread(target=pump, daemon=True)
            th.start()
            while not stop.is_set():
                try:
                    fr = ws_read(self.rfile)
                except (OSError, ValueError):
                    break
                if fr is None:
                    break
                op, data = fr
                if op in (1, 2, 0):
                    try:
                        port.write(data)
                    except Exception as e:
                        srv.log("bridge write: %s" % e)
                        break
                elif op == 8:
                    with wlock:
                        close(1000, "bye")
                    break
                elif op == 9:
                    with wlock:
                        self.wfile.write(ws_frame(10, data))
                        self.wfile.flush()
            stop.set()
            th.join(2)
            srv.log("page disconnected from the bridged board")
        finally:
            if port is not None:
                try:
                    port.close()
                except Exception:
                    pass
            srv.bridge_lock.release()
        self.close_connection = True


def serve(listen="127.0.0.1:0", bridge=None, log=None):
    host, port = listen.rsplit(":", 1)
    return LabServer((host or "127.0.0.1", int(port)), bridge=bridge, log=log)


def run(args):
    try:
        if bundle_stale():
            print("uspdm lab: building the page (esbuild)...", file=sys.stderr)
            build_bundle()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print("uspdm lab: %s" % e, file=sys.stderr)
        return 1
    try:
        srv = serve(args.listen, bridge=args.port_bridge)
    except (OSError, ValueError) as e:
        print("uspdm lab: cannot listen on %s: %s" % (args.listen, e), file=sys.stderr)
        return 1
    h, p = srv.server_address[:2]
    url = "http://%s:%d/" % ("localhost" if h in ("127.0.0.1", "::1") else h, p)
    print("uspdm lab: serving %s%s" % (url, (" (bridged board: %s)" % args.port_bridge) if args.port_bridge else ""))
    print("uspdm lab: Ctrl-C stops it")
    sys.stdout.flush()
    if args.url_file:
        with open(args.url_file + ".tmp", "w") as f:
            f.write(url + "\n")
        os.replace(args.url_file + ".tmp", args.url_file)
    if not args.no_browser:
        try:
            webbrowser.open(url)
        except Exception:
            pass
    import signal

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        srv.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
