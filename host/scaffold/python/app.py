"""`{{name}}`: a Switchyard plugin. Passes the events whose type matches one
of `types` and whose payload's `data.attributes.status` is one of
`statuses`; skips the others, with the reason.

Config (all keys optional):
`{"types": ["license.*"], "statuses": ["EXPIRED", "SUSPENDED"]}`
(an empty `statuses` list lets every status through).
"""

import switchyard_plugin as sp


def matches(pattern: str, event_type: str) -> bool:
    """`*` matches everything, `family.*` a family, anything else exactly."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class Filter(sp.Plugin):
    def __init__(self, config: dict):
        unknown = set(config) - {"types", "statuses"}
        if unknown:
            raise sp.bad_config(f"unknown field `{sorted(unknown)[0]}`")
        self.types = config.get("types", ["license.*"])
        self.statuses = config.get("statuses", ["EXPIRED", "SUSPENDED"])
        if not self.types:
            raise sp.bad_config("`types` must name at least one event type")

    def handle(self, event: sp.Event):
        if not any(matches(p, event.type) for p in self.types):
            return sp.skip(f"event type {event.type} is not selected")
        if not self.statuses:
            return sp.PASS
        attributes = (event.document().get("data") or {}).get("attributes") or {}
        status = attributes.get("status")
        if status in self.statuses:
            return sp.PASS
        return sp.skip(f"status {status if status is not None else '(none)'} is not selected")


WitWorld = sp.export(Filter)
