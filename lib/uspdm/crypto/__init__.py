"""Cryptography for uspdm: hashes, HMAC/HKDF, AES-GCM, HMAC_DRBG, P-384/P-256.

Each module prefers the board's C modules (hashlib, cryptolib) and falls
back to pure Python.
"""
