// Test plugin (tests/it/polyglot.rs): misbehaves or probes the sandbox
// according to the event type, and reports what it saw as the skip reason.
import { definePlugin, pass, skip } from "./switchyard-plugin.mjs";

export const { configure, handle } = definePlugin(() => (event) => {
  switch (event.type) {
    case "probe.loop": {
      let n = 0;
      for (;;) n++;
    }
    case "probe.alloc": {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    case "probe.raise":
      throw new RangeError("the probe threw on purpose");
    case "probe.random":
      return skip(JSON.stringify([Math.random(), Math.random(), Math.random()]));
    case "probe.time":
      return skip(JSON.stringify({ now: Date.now(), date: new Date().toISOString() }));
    case "probe.perf":
      return skip(JSON.stringify({ perf: performance.now() }));
    case "probe.env":
      return skip(JSON.stringify({ process: typeof process, fetch: typeof fetch }));
    default:
      return pass();
  }
});
