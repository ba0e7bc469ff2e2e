"""uspdm firmware entry point.

On a board this file is /main.py: it builds the Device for the board module
(/board.py, from boards/<name>/) and runs the board's serve loop, which never
returns (returning would hand the USB serial to the REPL).  The simulator
imports it and calls make_device() itself.
"""


def make_device(sim=False, verbose=False):
    import board

    if sim:   # the simulator's Device: hex strings and heap figures (firmware/simdev.py)
        from simdev import SimDevice

        return SimDevice(board, verbose=verbose, measure_heap=True)
    from device import Device

    return Device(board, verbose=verbose)


def main():
    import board

    # The way back to the REPL: the board's boot button held during the
    # first second after reset skips the firmware (see usb_serial.py).
    skip = getattr(board, "skip_firmware", None)
    if skip is not None and skip():
        print("uspdm: button held at boot: firmware not started; this is the REPL")
        return
    dev = make_device()
    board.serve(dev)


if __name__ == "__main__":
    main()
