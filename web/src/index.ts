// @cellwire/web: builds the dev web page (index.html + one ES2022 module bundle) so that an edge in dev
// mode can serve it. The page itself is src/main.ts; this module runs in Node only.
import { copyFile, mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const webDirectory = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");

/** Bundles src/main.ts into dist/app.js, copies index.html beside it; returns dist's absolute path. */
export async function buildWebPage(): Promise<string> {
  const distDirectory = join(webDirectory, "dist");
  await mkdir(distDirectory, { recursive: true });
  await build({
    entryPoints: [join(webDirectory, "src", "main.ts")],
    outfile: join(distDirectory, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: "linked",
    minify: false,
    legalComments: "none",
    logLevel: "silent",
  });
  await copyFile(join(webDirectory, "index.html"), join(distDirectory, "index.html"));
  return distDirectory;
}
