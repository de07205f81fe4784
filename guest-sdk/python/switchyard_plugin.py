"""Switchyard plugin helpers for Python (componentize-py).

Copy this file next to your plugin's `app.py` (`switchyard plugin new --lang
python` does it for you). It has no dependency beyond the bindings that
`componentize-py` generates from `wit/`, so nothing extra is loaded at run
time. Plugin code then reads like the Rust SDK's:

    import switchyard_plugin as sp

    class OnlyPolicy(sp.Plugin):
        def __init__(self, config: dict):
            self.policy = config.get("policy") or sp.fail(sp.bad_config("`policy` is required"))

        def handle(self, event: sp.Event):
            doc = event.document()          # bad-input error when not JSON
            if doc.get("data", {}).get("id") == self.policy:
                return sp.PASS
            return sp.skip("another policy")

    WitWorld = sp.export(OnlyPolicy)

* outcomes: `PASS` (or `pass_()`), `skip(reason)`, `rewrite(doc_or_bytes)`,
  `replace(body, content_type="application/json", headers=())`;
* errors: raise `bad_config(msg)`, `bad_input(msg)` or `internal(msg)` (all
  `PluginError`); any other exception becomes an `internal` error carrying
  its type and message (the router records it on the delivery attempt);
* `log.info(msg)` (and `trace`, `debug`, `warn`, `error`) writes to the
  router's log, tagged with the plugin's name.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import log as _wit_log
from wit_world.imports import types as _t

__all__ = [
    "Plugin", "Event", "PluginError", "PASS", "pass_", "skip", "rewrite", "replace",
    "bad_config", "bad_input", "internal", "rejected", "fail", "log", "export",
]


class PluginError(Exception):
    """An error with a kind: `bad-config`, `bad-input`, `internal` or
    `rejected` (permanent: the delivery fails at once, no retry)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def to_wit(self):
        kind = {
            "bad-config": _t.ErrorKind.BAD_CONFIG,
            "bad-input": _t.ErrorKind.BAD_INPUT,
            "rejected": _t.ErrorKind.REJECTED,
        }.get(self.kind, _t.ErrorKind.INTERNAL)
        return Err(_t.Error(kind, self.message))


def bad_config(message: str) -> PluginError:
    return PluginError("bad-config", str(message))


def bad_input(message: str) -> PluginError:
    return PluginError("bad-input", str(message))


def internal(message: str) -> PluginError:
    return PluginError("internal", str(message))


def rejected(message: str) -> PluginError:
    """A permanent error: this event can never be handled (no retry)."""
    return PluginError("rejected", str(message))


def fail(error: PluginError):
    """Raises `error` (usable inside an expression)."""
    raise error


PASS = _t.Outcome_Pass()


def pass_():
    """Deliver unchanged; the next plugin in the chain runs."""
    return PASS


def skip(reason: str):
    """Do not deliver; recorded as filtered with this reason."""
    return _t.Outcome_Skip(str(reason))


def _bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


def rewrite(payload):
    """Replace the event's payload (a dict/list is serialized as JSON)."""
    return _t.Outcome_Rewrite(_bytes(payload))


def replace(body, content_type: str = "application/json", headers=()):
    """Replace the whole HTTP body (a dict/list is serialized as JSON)."""
    return _t.Outcome_Replace(
        _t.Replacement(_bytes(body), content_type, [(str(k), str(v)) for k, v in headers])
    )


class _Log:
    def _emit(self, level, message):
        _wit_log.log(level, str(message))

    def trace(self, message):
        self._emit(_wit_log.Level.TRACE, message)

    def debug(self, message):
        self._emit(_wit_log.Level.DEBUG, message)

    def info(self, message):
        self._emit(_wit_log.Level.INFO, message)

    def warn(self, message):
        self._emit(_wit_log.Level.WARN, message)

    def error(self, message):
        self._emit(_wit_log.Level.ERROR, message)


log = _Log()


class Event:
    """One event: `id`, `account`, `endpoint`, `type`, `created`,
    `created_ms`, `payload` (bytes); `document()` parses the payload."""

    __slots__ = ("id", "account", "endpoint", "type", "created", "created_ms", "payload", "_doc")

    def __init__(self, raw):
        self.id = raw.id
        self.account = raw.account
        self.endpoint = raw.endpoint
        self.type = raw.event_type
        self.created = raw.created
        self.created_ms = raw.created_ms
        self.payload = raw.payload
        self._doc = None

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]

    def document(self):
        """The payload as JSON (a `bad-input` error when it is not JSON)."""
        if self._doc is None:
            try:
                self._doc = json.loads(self.payload)
            except ValueError as e:
                raise bad_input(f"payload is not JSON: {e}")
        return self._doc


class Plugin:
    """Subclass it: `__init__(self, config: dict)` validates the endpoint's
    configuration (raise `bad_config`), `handle(self, event)` returns an
    outcome."""

    def __init__(self, config: dict):
        self.config = config

    def handle(self, event: Event):
        return PASS


def _as_error(e: BaseException):
    if isinstance(e, PluginError):
        return e.to_wit()
    return internal(f"{type(e).__name__}: {e}").to_wit()


def export(plugin_class):
    """The `WitWorld` class componentize-py exports, running `plugin_class`."""

    class _Export(wit_world.WitWorld):
        def configure(self, config: str) -> None:
            try:
                parsed = json.loads(config) if config.strip() else {}
            except ValueError as e:
                raise bad_config(f"invalid configuration: {e}").to_wit()
            if not isinstance(parsed, dict):
                raise bad_config("invalid configuration: expected a JSON object").to_wit()
            try:
                _Export.instance = plugin_class(parsed)
            except Err:
                raise
            except Exception as e:
                err = e if isinstance(e, PluginError) else bad_config(f"{type(e).__name__}: {e}")
                raise err.to_wit()

        def handle(self, event):
            plugin = getattr(_Export, "instance", None)
            if plugin is None:
                raise internal("handle called before configure").to_wit()
            try:
                outcome = plugin.handle(Event(event))
            except Err:
                raise
            except Exception as e:
                raise _as_error(e)
            return PASS if outcome is None else outcome

    return _Export
