#!/usr/bin/env python3
"""Verifies Switchyard deliveries with independent implementations.

stdin: {"deliveries": [{"body": str, "headers": {name: value}, "secrets": [whsec...],
         "keygen_public_key": hex | null, "host": str, "path": str}]}
For each delivery:
- the Standard Webhooks signature with the reference `standardwebhooks`
  package and with Svix's own `svix` library (each secret listed must verify);
- Keygen's scheme as Keygen's example handler does it: rebuild the signing
  string from (request-target), host, date, digest and check the ed25519
  signature with the hex verify key (via `cryptography`), and the digest.
Prints one line per delivery; exits non-zero on the first failure.
"""
import base64
import hashlib
import json
import re
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook


def check_keygen(d):
    h = {k.lower(): v for k, v in d["headers"].items()}
    body = d["body"].encode()
    digest = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    if h.get("digest") != digest:
        raise ValueError(f"digest mismatch: {h.get('digest')} != {digest}")
    params = dict(re.findall(r'(\w+)="([^"]*)"', h["keygen-signature"]))
    if params.get("algorithm") != "ed25519":
        raise ValueError("algorithm is not ed25519")
    if params.get("headers") != "(request-target) host date digest":
        raise ValueError("unexpected signed headers: " + params.get("headers", ""))
    data = "\n".join([
        f"(request-target): post {d['path']}",
        f"host: {h['host']}",
        f"date: {h['date']}",
        f"digest: {h['digest']}",
    ])
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(d["keygen_public_key"]))
    key.verify(base64.b64decode(params["signature"]), data.encode())
    return params.get("keyid")


def main():
    req = json.load(sys.stdin)
    for i, d in enumerate(req["deliveries"]):
        headers = {k.lower(): v for k, v in d["headers"].items()}
        for secret in d.get("secrets", []):
            StandardWebhook(secret).verify(d["body"], headers)
            SvixWebhook(secret).verify(d["body"], headers)
        keyid = None
        if d.get("keygen_public_key"):
            keyid = check_keygen(d)
        print(f"delivery {i}: ok (standard secrets: {len(d.get('secrets', []))}, keygen keyid: {keyid})")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any verification failure
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
