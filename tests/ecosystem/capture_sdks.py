#!/usr/bin/env python3
"""Capture what the official analytics SDKs really send, for shape checks.

Starts an HTTP capture server on 127.0.0.1 (random port), points the official
Segment SDK (`segment-analytics-python`) and Amplitude SDK
(`amplitude-analytics`) at it, makes calls equivalent to Switchyard's sample
events in examples/events/, and writes every captured request as JSON:

    python3 tests/ecosystem/capture_sdks.py OUT.json

OUT.json: {"segment": {"identify": REQ, "track": REQ, "batched": REQ},
           "amplitude": {"events": REQ}, "versions": {...}}
where REQ = {"method", "path", "headers" (lower-case names), "body" (JSON)}.

The plugins' tests (plugins/{segment,amplitude}/tests/ecosystem.rs) run this
script and compare field names, JSON types and nesting with the plugins'
output. Exit status 3 means the SDKs are not installed:
    pip install -r tests/ecosystem/requirements.txt
"""

import gzip
import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:
    from segment.analytics.client import Client as SegmentClient
    from segment.analytics.version import VERSION as SEGMENT_VERSION
    from amplitude import Amplitude, BaseEvent, Config as AmplitudeConfig
    from amplitude.constants import SDK_VERSION as AMPLITUDE_VERSION
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"capture_sdks.py: the official SDKs are missing ({e}); install them with\n"
        "    pip install -r tests/ecosystem/requirements.txt\n"
        "(i.e. pip install segment-analytics-python amplitude-analytics)",
        file=sys.stderr,
    )
    sys.exit(3)

EVENTS = Path(__file__).resolve().parents[2] / "examples" / "events"
WRITE_KEY = "wk_test"
API_KEY = "amp_key"


def fixture(name):
    return json.loads((EVENTS / f"{name}.json").read_text())


def when(ev):
    """The fixture's `created` as an aware datetime (what an SDK user passes)."""
    return datetime.fromisoformat(ev["created"].replace("Z", "+00:00")).astimezone(timezone.utc)


def millis(ev):
    return int(round(when(ev).timestamp() * 1000))


class Capture(BaseHTTPRequestHandler):
    requests = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        with self.lock:
            self.requests.append({
                "method": "POST",
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(raw),
            })
        reply = json.dumps({"code": 200, "success": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def take(path_prefix, count):
    with Capture.lock:
        found = [r for r in Capture.requests if r["path"].startswith(path_prefix)]
    if len(found) != count:
        sys.exit(f"capture_sdks.py: expected {count} request(s) to {path_prefix}, got {len(found)}")
    return found


def segment(base):
    user = fixture("user.created")
    succeeded = fixture("license.validation.succeeded")
    u, lic = user["payload"]["data"], succeeded["payload"]["data"]
    a = u["attributes"]
    client = SegmentClient(WRITE_KEY, host=base, sync_mode=True, max_retries=0)
    client.identify(
        user_id=u["id"],
        traits={"email": a["email"], "firstName": a["firstName"], "lastName": a["lastName"],
                "name": a["fullName"], "createdAt": a["created"], "role": a["role"],
                "status": a["status"], "metadata": a["metadata"]},
        timestamp=when(user),
        message_id=user["id"],
    )
    meta = succeeded["payload"]["meta"]
    client.track(
        user_id=lic["relationships"]["user"]["data"]["id"],
        event="License Validation Succeeded",
        properties={"resource_id": lic["id"], "resource_type": lic["type"],
                    "keygen_event": succeeded["event"], "status": lic["attributes"]["status"],
                    "expiry": lic["attributes"]["expiry"], "uses": lic["attributes"]["uses"],
                    "maxMachines": lic["attributes"]["maxMachines"],
                    "valid": meta["valid"], "code": meta["code"], "detail": meta["detail"]},
        timestamp=when(succeeded),
        message_id=succeeded["id"],
    )
    identify, track = take("/v1/batch", 2)
    # The same two calls through the SDK's own batching (its default,
    # asynchronous mode): one /v1/batch request carrying both.
    client = SegmentClient(WRITE_KEY, host=base, max_retries=0, upload_interval=0.5)
    client.identify(
        user_id=u["id"],
        traits={"email": a["email"], "firstName": a["firstName"], "lastName": a["lastName"],
                "name": a["fullName"], "createdAt": a["created"], "role": a["role"],
                "status": a["status"], "metadata": a["metadata"]},
        timestamp=when(user),
        message_id=user["id"],
    )
    meta = succeeded["payload"]["meta"]
    client.track(
        user_id=lic["relationships"]["user"]["data"]["id"],
        event="License Validation Succeeded",
        properties={"resource_id": lic["id"], "resource_type": lic["type"],
                    "keygen_event": succeeded["event"], "status": lic["attributes"]["status"],
                    "expiry": lic["attributes"]["expiry"], "uses": lic["attributes"]["uses"],
                    "maxMachines": lic["attributes"]["maxMachines"],
                    "valid": meta["valid"], "code": meta["code"], "detail": meta["detail"]},
        timestamp=when(succeeded),
        message_id=succeeded["id"],
    )
    client.flush()
    client.shutdown()
    batched = take("/v1/batch", 3)[2]
    return {"identify": identify, "track": track, "batched": batched}


def amplitude(base):
    succeeded = fixture("license.validation.succeeded")
    machine = fixture("machine.created")
    lic, m = succeeded["payload"]["data"], machine["payload"]["data"]
    meta = succeeded["payload"]["meta"]
    client = Amplitude(API_KEY, AmplitudeConfig(server_url=base + "/2/httpapi", min_id_length=5,
                                                flush_queue_size=100, flush_interval_millis=50))
    client.track(BaseEvent(
        event_type=succeeded["event"],
        user_id=lic["relationships"]["user"]["data"]["id"],
        time=millis(succeeded),
        insert_id=succeeded["id"],
        event_properties={"resource_id": lic["id"], "resource_type": lic["type"],
                          "keygen_event": succeeded["event"], "status": lic["attributes"]["status"],
                          "expiry": lic["attributes"]["expiry"], "uses": lic["attributes"]["uses"],
                          "maxMachines": lic["attributes"]["maxMachines"],
                          "valid": meta["valid"], "code": meta["code"], "detail": meta["detail"]},
        user_properties={"$set": {"name": lic["attributes"]["name"]}},
    ))
    client.track(BaseEvent(
        event_type=machine["event"],
        user_id=m["relationships"]["owner"]["data"]["id"],
        device_id=m["attributes"]["fingerprint"],
        platform=m["attributes"]["platform"],
        time=millis(machine),
        insert_id=machine["id"],
        event_properties={"resource_id": m["id"], "resource_type": m["type"],
                          "keygen_event": machine["event"], "platform": m["attributes"]["platform"]},
        user_properties={"$set": {"name": m["attributes"]["name"]}},
    ))
    for future in client.flush():  # send now, and wait for the send
        future.result(timeout=30)
    client.shutdown()
    (request,) = take("/2/httpapi", 1)
    return {"events": request}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: capture_sdks.py OUT.json")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = {
            "segment": segment(base),
            "amplitude": amplitude(base),
            "versions": {"segment-analytics-python": SEGMENT_VERSION,
                         "amplitude-analytics": AMPLITUDE_VERSION},
        }
    finally:
        server.shutdown()
    Path(sys.argv[1]).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
