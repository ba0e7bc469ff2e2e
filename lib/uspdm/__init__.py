"""uspdm: an SPDM (DMTF DSP0274) responder for microcontrollers.

Portable code: runs unchanged on MicroPython 1.26+ and CPython 3.11.
"""

__version__ = "0.1.0"
