// For tracing-off.test.ts: a module loader hook, registered with `node --import`, that appends every
// module specifier naming @opentelemetry, and the URL it resolved to, to the file named by
// OPENTELEMETRY_IMPORTS_FILE. Cellwire's code is ES modules, so any way it reaches OpenTelemetry (a static
// import anywhere in a service's module graph, or a dynamic import at run time) passes through here.
// Plain JavaScript: hooks run on the loader thread, before tsx could compile anything for it.
import { register } from "node:module";

register(
  `data:text/javascript,${encodeURIComponent(`
import { appendFileSync } from "node:fs";
const file = process.env.OPENTELEMETRY_IMPORTS_FILE;
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (file && (specifier.includes("@opentelemetry") || resolved.url.includes("@opentelemetry"))) {
    appendFileSync(file, specifier + " " + resolved.url + "\\n");
  }
  return resolved;
}
`)}`,
);
