// Where test code lives (docs/decisions/0026-where-test-code-lives.md), read from the tree's own imports:
// a workspace's src/ holds production code and its tests only, so every other file there is reached from
// a program (a main, a bin, a script, a benchmark: a file nobody imports) or from a package's entry
// without passing through a test; no exports map names a module only tests use; and nothing a program
// reaches lives in a test/ folder or in a test-only workspace. So fakes, contract suites, harnesses and
// the shared test kit never ship, and a reader of src/ meets no fake that looks like an implementation.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Workspaces that are test support as a whole: only tests and other test support may import them. */
const testOnlyWorkspaces = new Set(["testkit"]);
const sourceExtensions = /\.(ts|mts|mjs|js)$/;
const filesPerWalkMax = 20_000;

type Manifest = { readonly name: string; readonly directory: string; readonly exports: ReadonlyMap<string, string> };

function readJson(file: string): unknown {
  return JSON.parse(readFileSync(file, "utf8")) as unknown;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** An exports map's targets by subpath ("." for the entry); a conditional target counts by its `default`. */
function exportTargets(exportsField: unknown): Map<string, string> {
  const targets = new Map<string, string>();
  if (typeof exportsField === "string") targets.set(".", exportsField);
  if (isRecord(exportsField)) {
    for (const [subpath, target] of Object.entries(exportsField)) {
      if (typeof target === "string") targets.set(subpath, target);
      else if (isRecord(target) && typeof target["default"] === "string") targets.set(subpath, target["default"]);
    }
  }
  return targets;
}

function readManifests(): Manifest[] {
  const rootManifest = readJson(join(root, "package.json"));
  if (!isRecord(rootManifest) || !Array.isArray(rootManifest["workspaces"])) throw new Error("the root package.json lists no workspaces");
  return rootManifest["workspaces"].map((workspace): Manifest => {
    if (typeof workspace !== "string") throw new Error("a workspace that is not a folder name");
    const manifest = readJson(join(root, workspace, "package.json"));
    if (!isRecord(manifest) || typeof manifest["name"] !== "string") throw new Error(`${workspace}/package.json has no name`);
    return { name: manifest["name"], directory: workspace, exports: exportTargets(manifest["exports"]) };
  });
}

function walk(directory: string, files: string[]): void {
  if (!existsSync(directory)) return;
  for (const entry of readdirSync(directory)) {
    if (entry === "node_modules" || entry.startsWith(".")) continue;
    const path = join(directory, entry);
    if (statSync(path).isDirectory()) walk(path, files);
    else if (sourceExtensions.test(entry) && !entry.endsWith(".d.ts")) files.push(relative(root, path));
    if (files.length > filesPerWalkMax) throw new Error(`more than ${filesPerWalkMax} source files under ${directory}`);
  }
}

const specifierPatterns = [/\bfrom\s+"([^"]+)"/g, /\bimport\s*\(\s*"([^"]+)"\s*\)/g, /^\s*import\s+"([^"]+)"/gm];

/** The repository's files each file imports (relative paths, and @cellwire/* through their exports maps). */
function importGraph(files: readonly string[], manifests: readonly Manifest[]): Map<string, Set<string>> {
  const byName = new Map(manifests.map((manifest) => [manifest.name, manifest]));
  const known = new Set(files);
  const resolveSpecifier = (from: string, specifier: string): string | undefined => {
    if (specifier.startsWith(".")) {
      const target = relative(root, resolve(root, dirname(from), specifier));
      return known.has(target) ? target : undefined;
    }
    const match = /^(@cellwire\/[^/]+)(\/.*)?$/.exec(specifier);
    if (match === null) return undefined;
    const manifest = byName.get(match[1] ?? "");
    const target = manifest?.exports.get(`.${match[2] ?? ""}`);
    if (manifest === undefined || target === undefined) return undefined;
    return relative(root, resolve(root, manifest.directory, target));
  };
  const graph = new Map<string, Set<string>>();
  for (const file of files) {
    const text = readFileSync(join(root, file), "utf8");
    const targets = new Set<string>();
    for (const pattern of specifierPatterns) {
      for (const match of text.matchAll(pattern)) {
        const target = resolveSpecifier(file, match[1] ?? "");
        if (target !== undefined && target !== file) targets.add(target);
      }
    }
    graph.set(file, targets);
  }
  return graph;
}

const isTest = (file: string): boolean => file.endsWith(".test.ts");
const workspaceOf = (file: string): string => file.split("/")[0] ?? "";
const inTestFolder = (file: string): boolean => file.split("/")[1] === "test";
const isTestSupport = (file: string): boolean => isTest(file) || inTestFolder(file) || testOnlyWorkspaces.has(workspaceOf(file));

function readLayout() {
  const manifests = readManifests();
  const files: string[] = [];
  for (const manifest of manifests) walk(join(root, manifest.directory), files);
  walk(join(root, "scripts"), files);
  const graph = importGraph(files, manifests);
  const imported = new Set([...graph.values()].flatMap((targets) => [...targets]));
  // Programs: files nobody imports (mains, bins, scripts, benchmarks and the processes they spawn by path);
  // and each package's entry ("."), its public face even where no program of this repository imports it.
  const programs = files.filter((file) => !imported.has(file) && !isTestSupport(file));
  const packageEntries = manifests.flatMap((manifest) => {
    const entry = manifest.exports.get(".");
    return entry === undefined || testOnlyWorkspaces.has(manifest.directory)
      ? []
      : [relative(root, resolve(root, manifest.directory, entry))];
  });
  const production = new Set<string>();
  const pending = [...programs, ...packageEntries];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (production.has(file) || isTest(file)) continue;
    production.add(file);
    pending.push(...(graph.get(file) ?? []));
  }
  return { manifests, files, graph, production };
}

describe("where test code lives", () => {
  const { manifests, files, graph, production } = readLayout();

  it("reads the tree: every workspace has sources and the programs reach the services' mains", () => {
    expect(manifests.length).toBeGreaterThan(5);
    expect(files.length).toBeGreaterThan(100);
    expect(production).toContain("cells/src/main.ts");
    expect(production).toContain("edge/src/request-handler.ts");
    expect(production).toContain("cli/src/topology.ts");
  });

  it("a workspace's src/ holds production code and its tests only: no file there is reached only from tests", () => {
    const testOnly = files.filter(
      (file) => file.split("/")[1] === "src" && !isTest(file) && !testOnlyWorkspaces.has(workspaceOf(file)) && !production.has(file),
    );
    expect(testOnly, "move these to the workspace's test/ folder, or to testkit/ if several workspaces' tests share them").toEqual([]);
  });

  it("no exports map names a module only tests use (a package's entry aside, its other subpaths serve programs)", () => {
    const entries = manifests
      .filter((manifest) => !testOnlyWorkspaces.has(manifest.directory))
      .flatMap((manifest) =>
        [...manifest.exports].map(([subpath, target]) => ({
          entry: `${manifest.name}${subpath.slice(1)}`,
          file: relative(root, resolve(root, manifest.directory, target)),
        })),
      )
      .filter(({ file }) => !production.has(file));
    expect(entries).toEqual([]);
  });

  it("nothing a program reaches is test code: production imports no test/ folder, no testkit, no test file", () => {
    const leaks = [...production].flatMap((file) =>
      [...(graph.get(file) ?? [])].filter(isTestSupport).map((target) => `${file} -> ${target}`),
    );
    expect(leaks).toEqual([]);
  });
});
