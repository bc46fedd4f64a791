#!/usr/bin/env python3
"""Verify a presence webhook signature (docs/WEBHOOKS.md).

    verify.py SECRET SIGNATURE_HEADER_VALUE BODY_FILE     exit 0 = valid, 1 = not

integ_webhooks runs this file against real deliveries, so the snippet in the docs is tested.
"""
import hashlib
import hmac
import re
import sys
import time


def verify(secret: bytes, header: str, body: bytes, tolerance_s: int = 300) -> bool:
    """header: the X-Presence-Signature value; body: the raw request body (bytes, unparsed)."""
    m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header or "")
    if not m:
        return False
    if abs(time.time() - int(m.group(1))) > tolerance_s:
        return False  # too old (or from the future): a replay
    expected = hmac.new(secret, m.group(1).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, m.group(2))


if __name__ == "__main__":
    with open(sys.argv[3], "rb") as f:
        sys.exit(0 if verify(sys.argv[1].encode(), sys.argv[2], f.read()) else 1)
