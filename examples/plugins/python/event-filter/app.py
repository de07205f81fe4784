"""`event-filter` in Python: the same logic and configuration as the bundled
Rust plugin (`plugins/event-filter`). Passes or skips events by event type and
by conditions on the payload.

Config (all keys optional):
    {
      "include": ["license.*", "user.created"],
      "exclude": ["license.validation.*"],
      "conditions": [
        {"pointer": "/data/attributes/status", "equals": "EXPIRED"},
        {"pointer": "/data/attributes/metadata/tier", "in": ["gold", "silver"]},
        {"pointer": "/meta/valid", "exists": true}
      ],
      "match": "all"
    }
"""

import switchyard_plugin as sp

TESTS = ("equals", "not_equals", "in", "exists")
MISSING = object()


def same(a, b) -> bool:
    """JSON equality as serde_json has it: 1 != 1.0, true != 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return a == b


def pointer(doc, ptr: str):
    """RFC 6901 JSON pointer lookup; MISSING when nothing is there."""
    if ptr == "":
        return doc
    node = doc
    for token in ptr[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if token not in node:
                return MISSING
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
                return MISSING
            i = int(token)
            if i >= len(node):
                return MISSING
            node = node[i]
        else:
            return MISSING
    return node


def pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return event_type.startswith(prefix) and event_type[len(prefix):].startswith(".")
    return pattern == event_type


def strings(config: dict, key: str) -> list:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise sp.bad_config(f"invalid configuration: `{key}` must be a list of strings")
    return value


class Condition:
    def __init__(self, raw, index: int):
        if not isinstance(raw, dict):
            raise sp.bad_config(f"invalid configuration: conditions[{index}] must be an object")
        unknown = set(raw) - {"pointer", *TESTS}
        if unknown:
            raise sp.bad_config(f"invalid configuration: unknown field `{sorted(unknown)[0]}`")
        self.pointer = raw.get("pointer")
        if not isinstance(self.pointer, str):
            raise sp.bad_config(f"invalid configuration: conditions[{index}] needs a `pointer`")
        if not (self.pointer == "" or self.pointer.startswith("/")):
            raise sp.bad_config(
                f"conditions[{index}].pointer {self.pointer!r} is not a JSON pointer "
                "(it must start with '/')"
            )
        # As in the Rust plugin, a test given as null counts as absent.
        given = [t for t in TESTS if raw.get(t) is not None]
        if len(given) != 1:
            raise sp.bad_config(
                f"conditions[{index}] needs exactly one of `equals`, `not_equals`, `in`, `exists`"
            )
        self.test = given[0]
        self.value = raw[self.test]
        if self.test == "in" and not isinstance(self.value, list):
            raise sp.bad_config(f"invalid configuration: conditions[{index}].in must be a list")
        if self.test == "exists" and not isinstance(self.value, bool):
            raise sp.bad_config(f"invalid configuration: conditions[{index}].exists must be a boolean")

    def holds(self, doc) -> bool:
        found = pointer(doc, self.pointer)
        if self.test == "equals":
            return found is not MISSING and same(found, self.value)
        if self.test == "not_equals":
            return found is MISSING or not same(found, self.value)
        if self.test == "in":
            return found is not MISSING and any(same(found, v) for v in self.value)
        return (found is not MISSING and found is not None) == self.value


class EventFilter(sp.Plugin):
    def __init__(self, config: dict):
        unknown = set(config) - {"include", "exclude", "conditions", "match"}
        if unknown:
            raise sp.bad_config(f"invalid configuration: unknown field `{sorted(unknown)[0]}`")
        self.include = strings(config, "include")
        self.exclude = strings(config, "exclude")
        conditions = config.get("conditions") or []
        if not isinstance(conditions, list):
            raise sp.bad_config("invalid configuration: `conditions` must be a list")
        self.conditions = [Condition(c, i) for i, c in enumerate(conditions)]
        self.match = config.get("match") or "all"
        if self.match not in ("all", "any"):
            raise sp.bad_config("invalid configuration: `match` must be \"all\" or \"any\"")
        for p in self.include + self.exclude:
            if p == "" or ("*" in p and p != "*" and not p.endswith(".*")) or p.count("*") > 1:
                raise sp.bad_config(
                    f"pattern {p!r} is not valid: use `*`, `family.*` or an exact event type"
                )

    def handle(self, event: sp.Event):
        ty = event.type
        if self.include and not any(pattern_matches(p, ty) for p in self.include):
            return sp.skip(f"event type {ty} is not included")
        for p in self.exclude:
            if pattern_matches(p, ty):
                return sp.skip(f"event type {ty} is excluded by {p}")
        if not self.conditions:
            return sp.PASS
        doc = event.document()
        if not isinstance(doc, dict):
            raise sp.bad_input("payload must be a JSON object")
        test = all if self.match == "all" else any
        if test(c.holds(doc) for c in self.conditions):
            return sp.PASS
        return sp.skip("payload does not meet the conditions")


WitWorld = sp.export(EventFilter)
