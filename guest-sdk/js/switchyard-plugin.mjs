// Switchyard plugin helpers for JavaScript (componentize-js).
//
// Copy this file next to your plugin's `plugin.mjs` (`switchyard plugin new
// --lang js` does it for you) and import it; componentize-js bundles it into
// the component. No dependencies, nothing else at run time. Plugin code then
// reads like the Rust SDK's:
//
//   import { definePlugin, pass, skip, badConfig } from "./switchyard-plugin.mjs";
//
//   export const { configure, handle } = definePlugin((config) => {
//     if (!config.policy) throw badConfig("`policy` is required");
//     return (event) => event.document().data?.id === config.policy
//       ? pass() : skip("another policy");
//   });
//
// * outcomes: `pass()`, `skip(reason)`, `rewrite(docOrBytes)`,
//   `replace(body, contentType = "application/json", headers = [])`;
// * errors: throw `badConfig(msg)`, `badInput(msg)` or `internal(msg)` (all
//   `PluginError`); any other exception becomes an `internal` error with its
//   message (the router records it on the delivery attempt);
// * `log.info(msg)` (and `trace`, `debug`, `warn`, `error`) writes to the
//   router's log, tagged with the plugin's name.

import { log as witLog } from "switchyard:plugin/log@0.2.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * An error with a kind: "bad-config", "bad-input", "internal" or "rejected"
 * (permanent: the delivery fails at once, no retry).
 */
export class PluginError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
    // componentize-js turns a thrown value's `payload` into the `err` case.
    this.payload = { kind, message: String(message) };
  }
}

export const badConfig = (message) => new PluginError("bad-config", message);
export const badInput = (message) => new PluginError("bad-input", message);
export const internal = (message) => new PluginError("internal", message);
/** A permanent error: this event can never be handled (no retry). */
export const rejected = (message) => new PluginError("rejected", message);

/** Deliver unchanged; the next plugin in the chain runs. */
export const pass = () => ({ tag: "pass" });
/** Do not deliver; recorded as filtered with this reason. */
export const skip = (reason) => ({ tag: "skip", val: String(reason) });

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return encoder.encode(value);
  return encoder.encode(JSON.stringify(value));
}

/** Replace the event's payload (an object is serialized as JSON). */
export const rewrite = (payload) => ({ tag: "rewrite", val: toBytes(payload) });

/** Replace the whole HTTP body (an object is serialized as JSON). */
export const replace = (body, contentType = "application/json", headers = []) => ({
  tag: "replace",
  val: {
    body: toBytes(body),
    contentType,
    headers: headers.map(([k, v]) => [String(k), String(v)]),
  },
});

const emit = (level) => (message) => witLog(level, String(message));
export const log = {
  trace: emit("trace"),
  debug: emit("debug"),
  info: emit("info"),
  warn: emit("warn"),
  error: emit("error"),
};

/** The event: `id`, `account`, `endpoint`, `type`, `created`, `createdMs`,
 * `payload` (a Uint8Array); `document()` parses the payload. */
export class Event {
  constructor(raw) {
    this.id = raw.id;
    this.account = raw.account;
    this.endpoint = raw.endpoint;
    this.type = raw.eventType;
    this.created = raw.created;
    this.createdMs = raw.createdMs;
    this.payload = raw.payload;
    this._doc = undefined;
  }

  get family() {
    return this.type.split(".", 1)[0];
  }

  /** The payload as JSON (a bad-input error when it is not JSON). */
  document() {
    if (this._doc === undefined) {
      try {
        this._doc = JSON.parse(decoder.decode(this.payload));
      } catch (e) {
        throw badInput(`payload is not JSON: ${e.message}`);
      }
    }
    return this._doc;
  }
}

function asPluginError(e, kind) {
  if (e instanceof PluginError) return e;
  const name = e && e.name ? e.name : "Error";
  return new PluginError(kind, `${name}: ${e && e.message !== undefined ? e.message : e}`);
}

/**
 * Exports a plugin: `setup(config)` validates the endpoint's configuration
 * (throw `badConfig`) and returns the handler `(event) => outcome`.
 * Returns `{ configure, handle }` to export from your module.
 */
export function definePlugin(setup) {
  let handler = null;
  return {
    configure(text) {
      let config;
      try {
        config = text.trim() === "" ? {} : JSON.parse(text);
      } catch (e) {
        throw badConfig(`invalid configuration: ${e.message}`);
      }
      if (config === null || typeof config !== "object" || Array.isArray(config)) {
        throw badConfig("invalid configuration: expected a JSON object");
      }
      try {
        handler = setup(config);
      } catch (e) {
        throw asPluginError(e, "bad-config");
      }
    },
    handle(raw) {
      if (handler === null) throw internal("handle called before configure");
      try {
        return handler(new Event(raw)) ?? pass();
      } catch (e) {
        throw asPluginError(e, "internal");
      }
    },
  };
}
