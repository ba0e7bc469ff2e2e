"""`uspdm lab`'s server without a browser: the files it serves (the in-page
board's code, live from this checkout), its WebSocket bridge to a serial or
TCP port (RFC 6455 handshake checked against the RFC's own example), one page
at a time on the bridge, and no path outside build/lab/."""
import base64
import json
import os
import socket
import struct
import threading
import urllib.error
import urllib.request

import pytest

from uspdm_tools import lab

RFC6455_KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3
RFC6455_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class Echo:
    """A TCP port standing in for a board: echoes what it gets, upper-cased."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(2)
        self.port = self.s.getsockname()[1]
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(10)
        try:
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d.upper())
        except OSError:
            pass
        c.close()

    def close(self):
        self.stop = True
        self.s.close()


@pytest.fixture
def server():
    made = []

    def make(bridge=None):
        srv = lab.serve("127.0.0.1:0", bridge=bridge, log=open(os.devnull, "w"))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


def _get(srv, path):
    url = "http://127.0.0.1:%d%s" % (srv.server_address[1], path)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _ws(srv, key=RFC6455_KEY):
    s = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
    s.sendall(("GET /bridge HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, "connection closed during the handshake"
        head += d
    return s, head.decode()


def _send(s, payload, opcode=2):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes((0x80 | opcode,)) + (bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + struct.pack("!H", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))


def _recv(s):
    h = s.recv(2)
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", s.recv(2))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return h[0] & 0x0F, data


def test_board_files_and_static(server):
    srv = server()
    st, ct, body = _get(srv, "/board-files.json")
    files = json.loads(body)
    for p in ("/firmware/main.py", "/firmware/device.py", "/board/board.py", "/lib/uspdm/responder.py",
              "/lib/mctp/serial.py"):
        assert p in files
    with open(os.path.join(lab.REPO_ROOT, "firmware", "device.py"), "rb") as f:
        assert base64.b64decode(files["/firmware/device.py"]) == f.read()    # live from this checkout
    assert not any("__pycache__" in p or not p.endswith(".py") for p in files)
    st, ct, body = _get(srv, "/config.json")
    assert json.loads(body)["bridge"] is None
    if os.path.exists(os.path.join(lab.BUILD_DIR, "lab.js")):
        st, ct, body = _get(srv, "/")
        assert b'src="lab.js"' in body and ct.startswith("text/html")
        st, ct, _ = _get(srv, "/micropython.wasm")
        assert ct == "application/wasm"
    for bad in ("/../README.md", "/..%2fREADME.md", "/lab/../../README.md", "/nothing.js"):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(srv, bad)
        assert e.value.code == 404


def test_websocket_bridge_to_tcp_one_page_at_a_time(server):
    echo = Echo()
    try:
        srv = server(bridge="tcp:127.0.0.1:%d" % echo.port)
        assert json.loads(_get(srv, "/config.json")[2])["bridge"] == "tcp:127.0.0.1:%d" % echo.port
        s, head = _ws(srv)
        assert head.startswith("HTTP/1.1 101")
        assert "Sec-WebSocket-Accept: %s" % RFC6455_ACCEPT in head
        _send(s, b"\x7e\x01hello")
        got = b""
        while len(got) < 7:
            op, d = _recv(s)
            assert op == 2
            got += d
        assert got == b"\x7e\x01HELLO"
        big = bytes(range(256)) * 4
        _send(s, big)
        got = b""
        while len(got) < len(big):
            got += _recv(s)[1]
        assert got == big.upper()
        # a second page is told the board is busy (close 1013), the first keeps it
        s2, head2 = _ws(srv, key=base64.b64encode(os.urandom(16)).decode())
        op, d = _recv(s2)
        assert op == 8 and struct.unpack("!H", d[:2])[0] == 1013 and b"busy" in d
        s2.close()
        _send(s, b"again")
        assert _recv(s)[1] == b"AGAIN"
        _send(s, struct.pack("!H", 1000), opcode=8)
        assert _recv(s)[0] == 8
        s.close()
        # once the first page left, the next one gets the board
        for _ in range(50):
            s3, _ = _ws(srv, key=base64.b64encode(os.urandom(16)).decode())
            _send(s3, b"x")
            op, d = _recv(s3)
            s3.close()
            if op == 2:
                break
            threading.Event().wait(0.1)
        assert (op, d) == (2, b"X")
    finally:
        echo.close()


def test_websocket_without_a_bridge_says_so(server):
    srv = server()
    s, head = _ws(srv)
    op, d = _recv(s)
    assert op == 8 and struct.unpack("!H", d[:2])[0] == 1008 and b"--port-bridge" in d
    s.close()


def test_unreachable_bridge_target_is_reported(server):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    srv = server(bridge="127.0.0.1:%d" % free)
    s, head = _ws(srv)
    op, d = _recv(s)
    assert op == 8 and struct.unpack("!H", d[:2])[0] == 1011 and b"cannot open" in d
    s.close()
