// `{{name}}`: a Switchyard plugin. Passes the events whose type matches one
// of `types` and whose payload's `data.attributes.status` is one of
// `statuses`; skips the others, with the reason.
//
// Config (all keys optional):
// `{"types": ["license.*"], "statuses": ["EXPIRED", "SUSPENDED"]}`
// (an empty `statuses` list lets every status through).

import { definePlugin, pass, skip, badConfig } from "./switchyard-plugin.mjs";

// `*` matches everything, `family.*` a family, anything else exactly.
function matches(pattern, eventType) {
  if (pattern === "*") return true;
  if (pattern.endsWith(".*")) return eventType.startsWith(pattern.slice(0, -1));
  return pattern === eventType;
}

export const { configure, handle } = definePlugin((config) => {
  const unknown = Object.keys(config).filter((k) => k !== "types" && k !== "statuses");
  if (unknown.length) throw badConfig(`unknown field \`${unknown[0]}\``);
  const types = config.types ?? ["license.*"];
  const statuses = config.statuses ?? ["EXPIRED", "SUSPENDED"];
  if (!types.length) throw badConfig("`types` must name at least one event type");

  return (event) => {
    if (!types.some((p) => matches(p, event.type))) return skip(`event type ${event.type} is not selected`);
    if (!statuses.length) return pass();
    const status = event.document().data?.attributes?.status;
    return statuses.includes(status) ? pass() : skip(`status ${status ?? "(none)"} is not selected`);
  };
});
