// subscribeDirectoryChanges against the machine's NATS: the one way the worker and the edge follow the
// directory's moves. A published change reaches the callback decoded; a message that does not decode is
// reported, not passed on.
import { randomBytes } from "node:crypto";
import { afterAll, expect, it } from "vitest";
import { pollUntil, silentServiceLogger } from "@cellwire/testkit";
import { directoryChangesSubject, type DirectoryEntry } from "@cellwire/protocol";
import { subscribeDirectoryChanges } from "./directory-changes.ts";
import { encodeJson } from "./nats-json.ts";
import { anonymousNatsAccess } from "./nats-access.ts";
import { connectNats } from "./service-runtime.ts";
import type { ServiceLogger } from "./service-logger.ts";

const logger: ServiceLogger = silentServiceLogger;
const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
// The directory's access publishes the changes; an edge's may only read them.
const publisher = await connectNats(["127.0.0.1:4222"], "directory-changes-test", logger, anonymousNatsAccess("directory"));
afterAll(async () => {
  if (!publisher.isClosed()) await publisher.close();
});

it("passes each published change on decoded, and reports one that does not decode", async () => {
  const changes: DirectoryEntry[] = [];
  const warnings: string[] = [];
  const subscription = subscribeDirectoryChanges(
    publisher,
    namespace,
    (entry) => changes.push(entry),
    (message) => warnings.push(message),
  );
  await publisher.flush();
  const entry: DirectoryEntry = { kind: "user", id: "alice", cellId: "b", epoch: 7 };
  publisher.publish(directoryChangesSubject(namespace), "{not json");
  publisher.publish(directoryChangesSubject(namespace), encodeJson({ type: "directory.changed", entry }));
  await pollUntil("the change", () => (changes.length > 0 ? changes : undefined), { deadlineMs: 5000, detail: () => warnings.join("\n") });
  expect(changes).toEqual([entry]);
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toContain("directory.changed");
  subscription.unsubscribe();
});
