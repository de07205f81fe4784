// `event-filter` in JavaScript: the same logic and configuration as the
// bundled Rust plugin (`plugins/event-filter`). Passes or skips events by
// event type and by conditions on the payload.
//
// Config (all keys optional):
//   {
//     "include": ["license.*", "user.created"],
//     "exclude": ["license.validation.*"],
//     "conditions": [
//       {"pointer": "/data/attributes/status", "equals": "EXPIRED"},
//       {"pointer": "/data/attributes/metadata/tier", "in": ["gold", "silver"]},
//       {"pointer": "/meta/valid", "exists": true}
//     ],
//     "match": "all"
//   }

import { definePlugin, pass, skip, badConfig, badInput } from "./switchyard-plugin.mjs";

const TESTS = ["equals", "not_equals", "in", "exists"];
const MISSING = Symbol("missing");

// JSON equality as serde_json has it (1 and 1.0 differ there, but JSON.parse
// cannot tell them apart: both are the number 1).
function same(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && same(a[k], b[k]));
}

// RFC 6901 JSON pointer lookup; MISSING when nothing is there.
function pointer(doc, ptr) {
  if (ptr === "") return doc;
  let node = doc;
  for (let token of ptr.slice(1).split("/")) {
    token = token.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(node)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token)) return MISSING;
      const i = Number(token);
      if (i >= node.length) return MISSING;
      node = node[i];
    } else if (node !== null && typeof node === "object") {
      if (!Object.hasOwn(node, token)) return MISSING;
      node = node[token];
    } else {
      return MISSING;
    }
  }
  return node;
}

export function patternMatches(pattern, eventType) {
  if (pattern === "*") return true;
  if (pattern.endsWith(".*")) {
    const prefix = pattern.slice(0, -2);
    return eventType.startsWith(prefix) && eventType.slice(prefix.length).startsWith(".");
  }
  return pattern === eventType;
}

function strings(config, key) {
  const value = config[key];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw badConfig(`invalid configuration: \`${key}\` must be a list of strings`);
  }
  return value;
}

function condition(raw, index) {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw badConfig(`invalid configuration: conditions[${index}] must be an object`);
  }
  const unknown = Object.keys(raw).filter((k) => k !== "pointer" && !TESTS.includes(k));
  if (unknown.length) throw badConfig(`invalid configuration: unknown field \`${unknown[0]}\``);
  const ptr = raw.pointer;
  if (typeof ptr !== "string") throw badConfig(`invalid configuration: conditions[${index}] needs a \`pointer\``);
  if (!(ptr === "" || ptr.startsWith("/"))) {
    throw badConfig(`conditions[${index}].pointer ${JSON.stringify(ptr)} is not a JSON pointer (it must start with '/')`);
  }
  // As in the Rust plugin, a test given as null counts as absent.
  const given = TESTS.filter((t) => raw[t] !== undefined && raw[t] !== null);
  if (given.length !== 1) {
    throw badConfig(`conditions[${index}] needs exactly one of \`equals\`, \`not_equals\`, \`in\`, \`exists\``);
  }
  const test = given[0];
  const value = raw[test];
  if (test === "in" && !Array.isArray(value)) throw badConfig(`invalid configuration: conditions[${index}].in must be a list`);
  if (test === "exists" && typeof value !== "boolean") throw badConfig(`invalid configuration: conditions[${index}].exists must be a boolean`);
  return (doc) => {
    const found = pointer(doc, ptr);
    switch (test) {
      case "equals": return found !== MISSING && same(found, value);
      case "not_equals": return found === MISSING || !same(found, value);
      case "in": return found !== MISSING && value.some((v) => same(found, v));
      default: return (found !== MISSING && found !== null) === value;
    }
  };
}

export const { configure, handle } = definePlugin((config) => {
  const unknown = Object.keys(config).filter((k) => !["include", "exclude", "conditions", "match"].includes(k));
  if (unknown.length) throw badConfig(`invalid configuration: unknown field \`${unknown[0]}\``);
  const include = strings(config, "include");
  const exclude = strings(config, "exclude");
  const rawConditions = config.conditions ?? [];
  if (!Array.isArray(rawConditions)) throw badConfig("invalid configuration: `conditions` must be a list");
  const conditions = rawConditions.map(condition);
  const match = config.match ?? "all";
  if (match !== "all" && match !== "any") throw badConfig('invalid configuration: `match` must be "all" or "any"');
  for (const p of [...include, ...exclude]) {
    if (p === "" || (p.includes("*") && p !== "*" && !p.endsWith(".*")) || p.split("*").length > 2) {
      throw badConfig(`pattern ${JSON.stringify(p)} is not valid: use \`*\`, \`family.*\` or an exact event type`);
    }
  }

  return (event) => {
    const ty = event.type;
    if (include.length && !include.some((p) => patternMatches(p, ty))) return skip(`event type ${ty} is not included`);
    const excludedBy = exclude.find((p) => patternMatches(p, ty));
    if (excludedBy !== undefined) return skip(`event type ${ty} is excluded by ${excludedBy}`);
    if (!conditions.length) return pass();
    const doc = event.document();
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw badInput("payload must be a JSON object");
    const ok = match === "all" ? conditions.every((c) => c(doc)) : conditions.some((c) => c(doc));
    return ok ? pass() : skip("payload does not meet the conditions");
  };
});
