import { defineConfig } from "vitest/config";

const workspaces = ["protocol", "cluster", "directory", "cells", "edge", "client", "web", "cli", "loadtest", "sim", "testkit"];
// A workspace's tests sit beside its code in src/; test/ holds its fakes and harnesses (and the tests of
// those, such as the memory store's run of the store contract). Files there that are not *.test.ts are
// scaffolding, never run as tests (docs/decisions/0026-where-test-code-lives.md).
const testFolders = workspaces.flatMap((workspace) => [`${workspace}/src`, `${workspace}/test`]);

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          // eslint.config.test.ts checks the lint gate's config, which lives at the root.
          include: [...testFolders.map((folder) => `${folder}/**/*.test.ts`), "eslint.config.test.ts"],
          exclude: ["**/*.integration.test.ts", "**/node_modules/**"],
        },
      },
      {
        test: {
          name: "integration",
          include: testFolders.map((folder) => `${folder}/**/*.integration.test.ts`),
          exclude: ["**/node_modules/**"],
          // Integration tests start real processes against the machine's shared services: one file at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
