"""The CYPHONIC certificate: an Ed25519-signed statement of identity.

Like a much smaller X.509: serial, role, FQDN, the holder's Ed25519 (signing)
and X25519 (agreement) public keys, validity, and the issuing CA's key.
"""

from construct import (
    Bytes,
    Const,
    Enum,
    Int8ub,
    Int64ub,
    RawCopy,
    Struct,
    Terminated,
)

from cyphonic.wire.common import Fqdn

Role = Enum(Int8ub, ca=0, authority=1, node=2, nms=3, trs=4, adapter=5, general=6)

CertificateBody = Struct(
    "version" / Const(1, Int8ub),
    "serial" / Int64ub,
    "role" / Role,
    "fqdn" / Fqdn,
    "sign_key" / Bytes(32),
    "dh_key" / Bytes(32),
    "not_before" / Int64ub,
    "not_after" / Int64ub,
    "issuer" / Bytes(32),
)

# The signature covers the exact body bytes (RawCopy keeps them).
Certificate = Struct(
    "body" / RawCopy(CertificateBody),
    "signature" / Bytes(64),
    Terminated,
)
