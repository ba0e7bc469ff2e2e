"""MCTP (DSP0236) packetization, control messages and bindings (DSP0253 serial, DSP0237 SMBus/I2C)."""
