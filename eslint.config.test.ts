// The lint gate's rules, run on small sources under made-up paths: each rule catches what it is for, and
// the test-only exemptions apply to test paths only. The paths do not exist, so they are linted in the
// project service's default project (the override below); everything else is the repo's eslint.config.js.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ESLint, type Linter } from "eslint";
import { beforeAll, describe, expect, it } from "vitest";

const root = import.meta.dirname;
const fixtureGlobs = ["*/src/lint-fixture*.ts", "*/src/testing/lint-fixture*.ts", "*/src/*/lint-fixture*.ts"];

let eslint: ESLint;

beforeAll(() => {
  eslint = new ESLint({
    cwd: root,
    overrideConfig: {
      files: ["**/lint-fixture*.ts"],
      languageOptions: { parserOptions: { projectService: { allowDefaultProject: fixtureGlobs, defaultProject: "tsconfig.json" } } },
    },
  });
});

async function lint(path: string, source: string): Promise<Linter.LintMessage[]> {
  const [result] = await eslint.lintText(source, { filePath: `${root}/${path}` });
  if (result === undefined) throw new Error(`eslint returned no result for ${path}`);
  return result.messages;
}

/** The config's exception lists (file → why), read from the module as the unknown JavaScript it is. */
async function exceptionLists(): Promise<Record<string, Record<string, unknown>>> {
  const config: unknown = await import(pathToFileURL(join(root, "eslint.config.js")).href);
  const lists: Record<string, Record<string, unknown>> = {};
  for (const name of ["crossWorkspaceImports", "longFiles", "longFunctionFiles"]) {
    const list: unknown = typeof config === "object" && config !== null ? (config as Record<string, unknown>)[name] : undefined;
    if (typeof list !== "object" || list === null) throw new Error(`eslint.config.js exports no ${name}`);
    lists[name] = list as Record<string, unknown>;
  }
  return lists;
}

async function rulesBroken(path: string, source: string): Promise<(string | null)[]> {
  return (await lint(path, source)).map((message) => message.ruleId);
}

const longFunction = [
  "export function long(): number {",
  "  let total = 0;",
  ...Array.from({ length: 80 }, (_, index) => `  total += ${index};`),
  "  return total;",
  "}",
  "",
].join("\n");
const longFile = [...Array.from({ length: 501 }, (_, index) => `export const value${index} = ${index};`), ""].join("\n");

// The first lint loads TypeScript and the project: give it time on a busy machine.
describe("the lint gate (eslint.config.js)", { timeout: 60_000 }, () => {
  it("reports a promise nobody awaits, and accepts one marked fire-and-forget with void", async () => {
    const prelude = "async function work(): Promise<void> {}\n";
    expect(await rulesBroken("edge/src/lint-fixture.ts", `${prelude}export function start(): void {\n  work();\n}\n`)).toEqual([
      "@typescript-eslint/no-floating-promises",
    ]);
    expect(await rulesBroken("edge/src/lint-fixture.ts", `${prelude}export function start(): void {\n  void work();\n}\n`)).toEqual([]);
  });

  it("reports an async callback where a void one is expected", async () => {
    const source =
      "export function each(values: number[]): void {\n  values.forEach(async (value) => {\n    await Promise.resolve(value);\n  });\n}\n";
    expect(await rulesBroken("edge/src/lint-fixture.ts", source)).toEqual(["@typescript-eslint/no-misused-promises"]);
  });

  it("reports a switch over a union that misses a member and has no default", async () => {
    const switchOver = (cases: string): string => `export function name(kind: "a" | "b"): string {\n  switch (kind) {\n${cases}  }\n}\n`;
    expect(await rulesBroken("edge/src/lint-fixture.ts", switchOver('    case "a":\n      return "a";\n'))).toContain(
      "@typescript-eslint/switch-exhaustiveness-check",
    );
    expect(
      await rulesBroken("edge/src/lint-fixture.ts", switchOver('    case "a":\n      return "a";\n    case "b":\n      return "b";\n')),
    ).toEqual([]);
    expect(
      await rulesBroken("edge/src/lint-fixture.ts", switchOver('    case "a":\n      return "a";\n    default:\n      return "other";\n')),
    ).toEqual([]);
  });

  it("reports two value imports of one module, and accepts a type import beside a value import", async () => {
    const twice = 'import { join } from "node:path";\nimport { resolve } from "node:path";\nexport const both = [join, resolve];\n';
    expect(await rulesBroken("edge/src/lint-fixture.ts", twice)).toEqual(["no-duplicate-imports"]);
    const typeBeside =
      'import type { ParsedPath } from "node:path";\nimport { parse } from "node:path";\nexport const parsed: ParsedPath = parse("/a");\n';
    expect(await rulesBroken("edge/src/lint-fixture.ts", typeBeside)).toEqual([]);
    const reexport = 'import { join } from "node:path";\nexport { resolve } from "node:path";\nexport const joined = join("a");\n';
    expect(await rulesBroken("edge/src/lint-fixture.ts", reexport)).toEqual(["no-duplicate-imports"]);
  });

  it("reports an import of another workspace's src/, by package name or by relative path", async () => {
    const imports = (specifier: string): string => `import { x } from "${specifier}";\nexport const y = x;\n`;
    const deep = await lint("edge/src/lint-fixture.ts", imports("@cellwire/cells/src/store/store.ts"));
    expect(deep.filter((message) => message.ruleId === "no-restricted-imports")).toHaveLength(1);
    const relative = await lint("edge/src/lint-fixture.ts", imports("../../cells/src/store/store.ts"));
    expect(relative.filter((message) => message.ruleId === "no-restricted-imports")).toHaveLength(1);
    const deeper = await lint("edge/src/presence/lint-fixture.ts", imports("../../../cluster/src/index.ts"));
    expect(deeper.filter((message) => message.ruleId === "no-restricted-imports")).toHaveLength(1);
  });

  it("accepts a package entry, a declared subpath and a relative import inside the workspace", async () => {
    const source = [
      'import { closeCodes } from "@cellwire/protocol";',
      'import { signDevToken } from "@cellwire/edge/dev-keys";',
      'import { Session } from "../session.ts";',
      "export const used = [closeCodes, signDevToken, Session];",
      "",
    ].join("\n");
    expect(
      (await lint("edge/src/presence/lint-fixture.ts", source)).filter((message) => message.ruleId === "no-restricted-imports"),
    ).toEqual([]);
  });

  it("reports a function over 80 lines and a file over 500 lines in production code", async () => {
    expect(await rulesBroken("edge/src/lint-fixture.ts", longFunction)).toEqual(["max-lines-per-function"]);
    expect(await rulesBroken("edge/src/lint-fixture.ts", longFile)).toEqual(["max-lines"]);
  });

  it("lists only exceptions that name an existing file and say why", async () => {
    for (const [name, list] of Object.entries(await exceptionLists())) {
      for (const [file, why] of Object.entries(list)) {
        expect(existsSync(join(root, file)), `${name}: ${file} no longer exists (split or moved?): update its entry`).toBe(true);
        expect(typeof why === "string" && why.length > 10, `${name}: ${file} needs a one-line justification`).toBe(true);
      }
    }
  });

  it("lets tests, test helpers and harnesses be long", async () => {
    for (const path of [
      "edge/src/lint-fixture.test.ts",
      "edge/src/lint-fixture.integration.test.ts",
      "edge/src/testing/lint-fixture.ts",
      "cells/src/lint-fixture.harness.ts",
    ]) {
      expect(await rulesBroken(path, longFunction), path).toEqual([]);
      expect(await rulesBroken(path, longFile), path).toEqual([]);
    }
  });
});
