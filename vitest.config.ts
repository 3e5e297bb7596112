import { defineConfig } from "vitest/config";

const workspaces = ["protocol", "cluster", "directory", "cells", "edge", "client", "web", "cli", "loadtest"];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          // eslint.config.test.ts checks the lint gate's config, which lives at the root.
          include: [...workspaces.map((workspace) => `${workspace}/src/**/*.test.ts`), "eslint.config.test.ts"],
          exclude: ["**/*.integration.test.ts", "**/node_modules/**"],
        },
      },
      {
        test: {
          name: "integration",
          include: workspaces.map((workspace) => `${workspace}/src/**/*.integration.test.ts`),
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
