"""MCTP (DSP0236) packetization, control messages and bindings (DSP0253 serial, DSP0237 SMBus/I2C).

Sans-I/O, MicroPython and CPython.  Modules:
  mctp.packet    header, packetize()/iter_packets(), Reassembler
  mctp.control   control-message responder and request/response helpers
  mctp.serial    DSP0253 encode_frame(), SerialDecoder (streaming), fcs16()
  mctp.smbus     DSP0237 encode(), decode(), decode_target(), SmbusRx, crc8()
  mctp.endpoint  Endpoint (responder stack)
  mctp.requester Requester (host side; not loaded on a board)
See mctp.endpoint's docstring for the stack API.
"""
