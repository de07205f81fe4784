#!/usr/bin/env python3
"""Signs requests the way Keygen signs its webhook deliveries, written from
Keygen's documentation ("Using Webhooks": Date, Digest, Keygen-Signature;
signing string `(request-target): post <path>`, `host: <host>`,
`date: <date>`, `digest: sha-256=<base64 sha256(body)>`, joined by newlines;
ed25519 over it) with the `cryptography` package - independent of
Switchyard's own signing code.

stdin: {"seed": hex, "keyid": str, "requests": [{"host": str, "path": str,
        "body": str, "date": RFC 7231 date | null (now), "date_offset_s": int}]}
stdout: {"requests": [{"headers": {"date", "digest", "keygen-signature"},
         "public_key": hex}]}
"""
import base64
import hashlib
import json
import sys
import time
from email.utils import formatdate

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def sign(key, keyid, host, path, body, date):
    digest = "sha-256=" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    signing = "\n".join([
        f"(request-target): post {path}",
        f"host: {host}",
        f"date: {date}",
        f"digest: {digest}",
    ])
    sig = base64.b64encode(key.sign(signing.encode())).decode()
    return {
        "date": date,
        "digest": digest,
        "keygen-signature": (
            f'keyid="{keyid}", algorithm="ed25519", signature="{sig}", '
            'headers="(request-target) host date digest"'
        ),
    }


def main():
    req = json.load(sys.stdin)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(req["seed"]))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    out = []
    for r in req["requests"]:
        date = r.get("date") or formatdate(time.time() + r.get("date_offset_s", 0), usegmt=True)
        out.append({
            "headers": sign(key, req.get("keyid", "keygen-account"), r["host"], r["path"], r["body"], date),
            "public_key": public,
        })
    json.dump({"requests": out}, sys.stdout)


if __name__ == "__main__":
    main()
