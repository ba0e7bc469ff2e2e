"""The lab board: the firmware running in real MicroPython (wasm) inside a web page.

`uspdm lab` serves a page (tools/lab/) that loads the pinned MicroPython
WebAssembly build in the browser, copies lib/, firmware/, this folder and
the simulated board's module (boards/sim/board.py, as /board/simboard.py)
into its filesystem and feeds the board's "USB serial" from the page's own
verifier.  /flash lives in the browser's storage: the page implements
js.uspdmFlashSync (save /flash) and js.uspdmRandomHex (crypto.getRandomValues),
the same JavaScript hooks the simulated board uses on a PC, so this board is
that one under its own name (the board module API is described there).
"""
from simboard import *  # noqa: F401,F403  storage, entropy, drbg, ticks, measured_files, config, DEFAULTS

NAME = "web"
