import { readFile, stat } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildWebPage } from "./index.ts";

describe("buildWebPage", () => {
  it("bundles the page into an absolute dist directory with index.html and an ES module app.js", async () => {
    const distDirectory = await buildWebPage();
    expect(isAbsolute(distDirectory)).toBe(true);
    expect(distDirectory.endsWith(join("web", "dist"))).toBe(true);
    const html = await readFile(join(distDirectory, "index.html"), "utf8");
    for (const id of ["user-id", "peer-id", "connect", "status", "conversations", "message-input", "send", "messages"])
      expect(html).toContain(`id="${id}"`);
    expect(html).toContain('<script type="module" src="app.js">');
    const bundle = await readFile(join(distDirectory, "app.js"), "utf8");
    expect(bundle).toContain("CellwireClient");
    // Browser code only: no Node built-ins reached the bundle.
    expect(bundle).not.toMatch(/from "node:|require\(/);
    expect((await stat(join(distDirectory, "app.js.map"))).size).toBeGreaterThan(0);
  });
});
