"""SPDM (DMTF DSP0274 1.0-1.3) message codes, error codes, flags and algorithm bits.

The reference list, for the host side, tests and enrolment (uspdm.enroll).  The
modules a board keeps loaded do not import it: each declares the codes it uses
as private const()s (`_ERROR = const(0x7F)`), which the compiler folds in, so
they cost no module dict entry and no interned name on a board that copies
.mpy files into its heap.  Keep the values here and there the same.
"""
from uspdm.compat import const

V10 = const(0x10)
V11 = const(0x11)
V12 = const(0x12)
V13 = const(0x13)

# Request codes
GET_DIGESTS = const(0x81)
GET_CERTIFICATE = const(0x82)
CHALLENGE = const(0x83)
GET_VERSION = const(0x84)
CHUNK_SEND = const(0x85)
CHUNK_GET = const(0x86)
GET_MEASUREMENTS = const(0xE0)
GET_CAPABILITIES = const(0xE1)
NEGOTIATE_ALGORITHMS = const(0xE3)
KEY_EXCHANGE = const(0xE4)
FINISH = const(0xE5)
PSK_EXCHANGE = const(0xE6)
PSK_FINISH = const(0xE7)
HEARTBEAT = const(0xE8)
KEY_UPDATE = const(0xE9)
GET_ENCAPSULATED_REQUEST = const(0xEA)
DELIVER_ENCAPSULATED_RESPONSE = const(0xEB)
END_SESSION = const(0xEC)
VENDOR_DEFINED_REQUEST = const(0xFE)
RESPOND_IF_READY = const(0xFF)

# Response codes
DIGESTS = const(0x01)
CERTIFICATE = const(0x02)
CHALLENGE_AUTH = const(0x03)
VERSION = const(0x04)
CHUNK_SEND_ACK = const(0x05)
CHUNK_RESPONSE = const(0x06)
MEASUREMENTS = const(0x60)
CAPABILITIES = const(0x61)
ALGORITHMS = const(0x63)
ERROR = const(0x7F)

# Error codes
ERR_INVALID_REQUEST = const(0x01)
ERR_INVALID_SESSION = const(0x02)
ERR_BUSY = const(0x03)
ERR_UNEXPECTED_REQUEST = const(0x04)
ERR_UNSPECIFIED = const(0x05)
ERR_DECRYPT_ERROR = const(0x06)
ERR_UNSUPPORTED_REQUEST = const(0x07)
ERR_REQUEST_IN_FLIGHT = const(0x08)
ERR_INVALID_RESPONSE_CODE = const(0x09)
ERR_SESSION_LIMIT_EXCEEDED = const(0x0A)
ERR_SESSION_REQUIRED = const(0x0B)
ERR_RESET_REQUIRED = const(0x0C)
ERR_RESPONSE_TOO_LARGE = const(0x0D)
ERR_REQUEST_TOO_LARGE = const(0x0E)
ERR_LARGE_RESPONSE = const(0x0F)
ERR_MESSAGE_LOST = const(0x10)
ERR_INVALID_POLICY = const(0x11)
ERR_VERSION_MISMATCH = const(0x41)
ERR_RESPONSE_NOT_READY = const(0x42)
ERR_REQUEST_RESYNCH = const(0x43)
ERR_OPERATION_FAILED = const(0x44)
ERR_NO_PENDING_REQUESTS = const(0x45)
ERR_VENDOR_DEFINED = const(0xFF)

# CAPABILITIES flags (responder)
CAP_CERT = const(0x00000002)
CAP_CHAL = const(0x00000004)
CAP_MEAS_NO_SIG = const(0x00000008)
CAP_MEAS_SIG = const(0x00000010)
CAP_MEAS_MASK = const(0x00000018)
CAP_MEAS_FRESH = const(0x00000020)
CAP_ENCRYPT = const(0x00000040)
CAP_MAC = const(0x00000080)
CAP_MUT_AUTH = const(0x00000100)
CAP_KEY_EX = const(0x00000200)
CAP_PSK_MASK = const(0x00000C00)
CAP_ENCAP = const(0x00001000)
CAP_HBEAT = const(0x00002000)
CAP_KEY_UPD = const(0x00004000)
CAP_HANDSHAKE_IN_THE_CLEAR = const(0x00008000)
CAP_PUB_KEY_ID = const(0x00010000)
CAP_CHUNK = const(0x00020000)
CAP_EVENT = const(0x02000000)
CAP_MULTI_KEY_MASK = const(0x0C000000)

# Which flag bits exist in each version (responder side).
CAP_MASK = {
    V10: 0x0000003F,
    V11: 0x0001FFFF,
    V12: 0x003FFFFF,
    V13: 0x3FFFFFFF,
}

MIN_DATA_TRANSFER_SIZE_12 = const(42)
MAX_CT_EXPONENT = const(31)

# NEGOTIATE_ALGORITHMS
MEAS_SPEC_DMTF = const(0x01)
ASYM_ECDSA_P256 = const(0x00000010)
ASYM_ECDSA_P384 = const(0x00000080)
HASH_SHA256 = const(0x00000001)
HASH_SHA384 = const(0x00000002)
MEAS_HASH_SHA256 = const(0x00000002)
MEAS_HASH_SHA384 = const(0x00000004)
OPAQUE_FMT_NONE = const(0x0)
OPAQUE_FMT_0 = const(0x1)
OPAQUE_FMT_1 = const(0x2)
OPAQUE_FMT_MASK = const(0xF)
MULTI_KEY_CONN = const(0x10)

ALG_TYPE_DHE = const(2)
ALG_TYPE_AEAD = const(3)
ALG_TYPE_REQ_BASE_ASYM = const(4)
ALG_TYPE_KEY_SCHEDULE = const(5)

DHE_SECP256R1 = const(0x0008)
DHE_SECP384R1 = const(0x0010)
AEAD_AES_128_GCM = const(0x0001)
AEAD_AES_256_GCM = const(0x0002)
KEY_SCHEDULE_SPDM = const(0x0001)

NEG_ALG_MAX_LENGTH_10 = const(0x40)
NEG_ALG_MAX_LENGTH_11 = const(0x80)
NEG_ALG_MAX_EXT_10 = const(8)
NEG_ALG_MAX_EXT_11 = const(20)

# name <-> bit tables
ASYM_BITS = {"p384": ASYM_ECDSA_P384, "p256": ASYM_ECDSA_P256}
HASH_BITS = {"sha256": HASH_SHA256, "sha384": HASH_SHA384}
MEAS_HASH_BITS = {"sha256": MEAS_HASH_SHA256, "sha384": MEAS_HASH_SHA384}
SIG_SIZE = {"p256": 64, "p384": 96}
CURVE_HASH = {"p256": "sha256", "p384": "sha384"}

# GET_MEASUREMENTS
MEAS_ATTR_SIGN = const(0x01)
MEAS_OP_COUNT = const(0x00)
MEAS_CHANGE_DETECTED = const(0x10)
MEAS_NO_CHANGE_DETECTED = const(0x20)

# Measurement summary hash types
SUMMARY_NONE = const(0x00)
SUMMARY_TCB = const(0x01)
SUMMARY_ALL = const(0xFF)

REQ_CONTEXT_SIZE = const(8)
MAX_OPAQUE_SIZE = const(1024)  # OpaqueDataLength limit of every SPDM message

CHUNK_EARLY_ERROR = const(0x01)

SIGN_CTX_CHALLENGE_AUTH = b"responder-challenge_auth signing"
SIGN_CTX_MEASUREMENTS = b"responder-measurements signing"
SIGN_CTX_KEY_EXCHANGE_RSP = b"responder-key_exchange_rsp signing"


def signing_prefix(version, context):
    """SPDM 1.2+ combined signing prefix (100 bytes): 'dmtf-spdm-v1.N.*' x4,
    zero padding, then the context string."""
    v = b"dmtf-spdm-v1." + bytes((0x30 + (version & 0x0F),)) + b".*"
    return v * 4 + bytes(36 - len(context)) + context
