"""Test plugin (tests/it/polyglot.rs): misbehaves or probes the sandbox
according to the event type, and reports what it saw as the skip reason."""

import json
import os
import time

import switchyard_plugin as sp


class Probe(sp.Plugin):
    def handle(self, event: sp.Event):
        kind = event.type
        if kind == "probe.loop":
            n = 0
            while True:
                n += 1
        if kind == "probe.alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if kind == "probe.raise":
            raise ValueError("the probe raised on purpose")
        if kind == "probe.open":
            seen = {}
            for path in ("/etc/passwd", "plugin.txt", "/"):
                try:
                    with open(path) as f:
                        seen[path] = "read " + str(len(f.read()))
                except Exception as e:
                    seen[path] = type(e).__name__
            try:
                with open("/tmp/x", "w") as f:
                    f.write("x")
                seen["write"] = "ok"
            except Exception as e:
                seen["write"] = type(e).__name__
            return sp.skip(json.dumps(seen, sort_keys=True))
        if kind == "probe.env":
            return sp.skip(json.dumps(dict(os.environ)))
        if kind == "probe.time":
            return sp.skip(json.dumps({"time": time.time(), "monotonic": time.monotonic()}))
        return sp.PASS


WitWorld = sp.export(Probe)
