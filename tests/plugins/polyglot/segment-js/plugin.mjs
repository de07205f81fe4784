// Benchmark plugin: the Segment-style transform of `plugins/segment`, in
// JavaScript, for the language comparison in docs/PLUGINS.md.
import { definePlugin, replace, badConfig, badInput } from "./switchyard-plugin.mjs";

const DEFAULT_ATTRIBUTES = ["status", "expiry", "uses", "maxMachines", "platform"];
const objectAction = (name) =>
  name.split(/[.-]/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join(" ");

function basic(key) {
  const bytes = new TextEncoder().encode(`${key}:`);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return "Basic " + btoa(s);
}

export const { configure, handle } = definePlugin((config) => {
  if (typeof config.write_key !== "string" || !config.write_key) throw badConfig("`write_key` is required");
  const auth = basic(config.write_key);
  const attributes = config.attributes ?? DEFAULT_ATTRIBUTES;
  const raw = config.naming === "raw";
  return (event) => {
    const doc = event.document();
    const data = doc.data ?? {};
    const attrs = data.attributes ?? {};
    const rels = data.relationships ?? {};
    const rel = (n) => rels[n]?.data?.id;
    const user = rel("user") ?? rel("owner") ?? (data.type === "users" ? data.id : undefined);
    const call = { messageId: event.id, timestamp: event.created, context: { library: { name: "switchyard", version: "0.1.0" } } };
    if (user) call.userId = user;
    else if (data.id) call.anonymousId = data.id;
    else throw badInput("the payload has no resource id");
    if (event.type === "user.created" || event.type === "user.updated") {
      call.type = "identify";
      call.traits = {};
      for (const k of ["email", "firstName", "lastName", "role", "status", "metadata"]) if (k in attrs) call.traits[k] = attrs[k];
    } else {
      const props = { resource_id: data.id, resource_type: data.type, keygen_event: event.type };
      for (const k of attributes) if (k in attrs) props[k] = attrs[k];
      if (event.type.startsWith("license.validation") && doc.meta && typeof doc.meta === "object") {
        for (const k of ["valid", "code", "detail"]) if (k in doc.meta) props[k] = doc.meta[k];
      }
      call.type = "track";
      call.event = raw ? event.type : objectAction(event.type);
      call.properties = props;
    }
    return replace({ batch: [call] }, "application/json", [["authorization", auth]]);
  };
});
