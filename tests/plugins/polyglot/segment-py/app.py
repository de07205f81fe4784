"""Benchmark plugin: the Segment-style transform of `plugins/segment` (track
calls and identify for users, same naming, attributes allow-list, userId
rules, batch body and Basic auth), in Python, for the language comparison
in docs/PLUGINS.md."""

import base64
import json

import switchyard_plugin as sp

DEFAULT_ATTRIBUTES = ["status", "expiry", "uses", "maxMachines", "platform"]


def object_action(name: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in name.replace(".", " ").replace("-", " ").split())


class Segment(sp.Plugin):
    def __init__(self, config: dict):
        key = config.get("write_key")
        if not isinstance(key, str) or not key:
            raise sp.bad_config("`write_key` is required")
        self.auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self.attributes = config.get("attributes", DEFAULT_ATTRIBUTES)
        self.raw = config.get("naming") == "raw"

    def handle(self, event: sp.Event):
        doc = event.document()
        data = doc.get("data") or {}
        attrs = data.get("attributes") or {}
        rels = data.get("relationships") or {}

        def rel(name):
            return ((rels.get(name) or {}).get("data") or {}).get("id")

        user = rel("user") or rel("owner") or (data.get("id") if data.get("type") == "users" else None)
        call = {"messageId": event.id, "timestamp": event.created,
                "context": {"library": {"name": "switchyard", "version": "0.1.0"}}}
        if user:
            call["userId"] = user
        elif data.get("id"):
            call["anonymousId"] = data["id"]
        else:
            raise sp.bad_input("the payload has no resource id")
        if event.type in ("user.created", "user.updated"):
            call["type"] = "identify"
            call["traits"] = {k: attrs[k] for k in ("email", "firstName", "lastName", "role", "status", "metadata") if k in attrs}
        else:
            props = {"resource_id": data.get("id"), "resource_type": data.get("type"), "keygen_event": event.type}
            for k in self.attributes:
                if k in attrs:
                    props[k] = attrs[k]
            meta = doc.get("meta")
            if event.type.startswith("license.validation") and isinstance(meta, dict):
                for k in ("valid", "code", "detail"):
                    if k in meta:
                        props[k] = meta[k]
            call["type"] = "track"
            call["event"] = event.type if self.raw else object_action(event.type)
            call["properties"] = props
        return sp.replace({"batch": [call]}, "application/json", [("authorization", self.auth)])


WitWorld = sp.export(Segment)
