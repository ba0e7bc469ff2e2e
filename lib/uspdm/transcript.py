"""SPDM transcripts kept as running hashes (never whole buffered transcripts).

A  = GET_VERSION, VERSION, GET_CAPABILITIES, CAPABILITIES, NEGOTIATE_ALGORITHMS,
     ALGORITHMS: kept as bytes (a few hundred bytes) because the hash algorithm
     is only known once ALGORITHMS is sent, and L1 / M1 / later TH all start with it.
M1 = A || B || C (B: GET_DIGESTS/DIGESTS/GET_CERTIFICATE/CERTIFICATE; C: CHALLENGE and
     CHALLENGE_AUTH without the signature): a hash object seeded with A on first use.
L1 = (A if SPDM 1.2+) || (GET_MEASUREMENTS || MEASUREMENTS without signature)*.

Callers fork with `fork_m1()` / `fork_l()` (copy()), update the fork, and only
`commit_*` it once the response is known to succeed, so a failing request
never changes a transcript.

M1 resets as in libspdm (libspdm_reset_message_buffer_via_request_code), which
both the DMTF requester and responder apply: GET_DIGESTS restarts B
(`fresh_m1`); a CHALLENGE_AUTH consumes B and C (`end_m1`); GET_MEASUREMENTS and
the session requests end an unfinished CHALLENGE sequence (`reset_m1`) only while
the connection is not yet authenticated (`auth`, set by the first CHALLENGE_AUTH
delivered, cleared by GET_VERSION); after that B keeps growing until the next
GET_DIGESTS or CHALLENGE_AUTH.
"""
from uspdm.crypto import sha2


class Transcript:
    def __init__(self):
        self.a = bytearray()
        self.hashname = None
        self.m1 = None
        self.l = None
        self.auth = False

    def reset(self):
        self.a = bytearray()
        self.hashname = None
        self.m1 = None
        self.l = None
        self.auth = False

    def add_a(self, *parts):
        for p in parts:
            self.a.extend(p)

    def set_hash(self, hashname):
        self.hashname = hashname
        self.m1 = None
        self.l = None

    def _seeded(self, with_a):
        h = sha2.new(self.hashname)
        if with_a:
            h.update(self.a)
        return h

    def fork_m1(self):
        return self.m1.copy() if self.m1 is not None else self._seeded(True)

    def fresh_m1(self):
        """M1 restarted at A: GET_DIGESTS resets B (and no C is pending
        between CHALLENGE_AUTHs), as libspdm does on both sides."""
        return self._seeded(True)

    def commit_m1(self, h):
        self.m1 = h

    def reset_m1(self):
        """CHALLENGE skipped (GET_MEASUREMENTS, KEY_EXCHANGE, ...): M1 restarts,
        unless a CHALLENGE_AUTH already authenticated the connection."""
        if not self.auth:
            self.m1 = None

    def end_m1(self):
        """B and C consumed by a CHALLENGE_AUTH."""
        self.m1 = None

    def fork_l(self, with_a):
        return self.l.copy() if self.l is not None else self._seeded(with_a)

    def commit_l(self, h):
        self.l = h

    def reset_l(self):
        self.l = None
