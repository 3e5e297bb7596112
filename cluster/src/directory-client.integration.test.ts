// A DirectoryClient's timing against the machine's NATS, with a stand-in directory on a namespace of its
// own: each request is told to the observer once, on the clock given, and failed only when no answer came
// or the answer was an error, a lookup's not_found ("no entry") excepted.
import { randomBytes } from "node:crypto";
import { afterAll, expect, it } from "vitest";
import { directorySubject, type DirectoryReply } from "@cellwire/protocol";
import { DirectoryClient } from "./directory-client.ts";
import { RemoteError, UnavailableError } from "./errors.ts";
import { anonymousNatsAccess } from "./nats-access.ts";
import { encodeJson } from "./nats-json.ts";
import { connectNats } from "./service-runtime.ts";
import type { ServiceLogger } from "./service-logger.ts";
import { silentServiceLogger } from "@cellwire/testkit";

const logger: ServiceLogger = silentServiceLogger;
const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const connection = await connectNats(["127.0.0.1:4222"], "directory-client-test", logger, anonymousNatsAccess("directory"));
afterAll(async () => {
  if (!connection.isClosed()) await connection.close();
});

/** The stand-in directory's answer to each request type; a type it does not list gets no answer at all. */
const answers: Record<string, DirectoryReply> = {
  "directory.resolveUser": { type: "directory.entry", entry: { kind: "user", id: "alice", cellId: "a", epoch: 1 }, placed: false },
  "directory.lookupUser": { type: "directory.error", code: "not_found", message: "no entry" },
  "directory.moveEntry": { type: "directory.error", code: "entry_changed", message: "another move won" },
};

it("tells the observer of every request's latency, and of the failed ones", async () => {
  const directory = connection.subscribe(directorySubject(namespace), {
    callback: (_error, message) => {
      const type = (JSON.parse(new TextDecoder().decode(message.data)) as { type: string }).type;
      const answer = answers[type];
      if (answer !== undefined) message.respond(encodeJson(answer));
    },
  });
  await connection.flush();
  let nowMs = 0;
  const ended: { operation: string; elapsedMs: number; failed: boolean }[] = [];
  const client = new DirectoryClient(connection, namespace, 200, {
    observer: { requestEnded: (operation, elapsedMs, failed) => ended.push({ operation, elapsedMs, failed }) },
    // Each read of the clock moves it on: a request's latency is the reads around it, 5 ms.
    monotonicNowMs: () => (nowMs += 5),
  });
  try {
    expect((await client.resolveUser("alice")).entry.cellId).toBe("a");
    expect(await client.lookupUser("bob")).toBeUndefined();
    await expect(client.moveEntry({ kind: "user", id: "alice", fromCellId: "a", toCellId: "b", expectedEpoch: 1 })).rejects.toThrow(
      RemoteError,
    );
    // The stand-in does not answer listCells: the request times out.
    await expect(client.listCells()).rejects.toThrow(UnavailableError);
  } finally {
    directory.unsubscribe();
  }
  await connection.flush();
  // Nobody listens any more: no responders.
  await expect(client.resolveUser("alice")).rejects.toThrow(UnavailableError);
  expect(ended).toEqual([
    { operation: "directory.resolveUser", elapsedMs: 5, failed: false },
    { operation: "directory.lookupUser", elapsedMs: 5, failed: false },
    { operation: "directory.moveEntry", elapsedMs: 5, failed: true },
    { operation: "directory.listCells", elapsedMs: 5, failed: true },
    { operation: "directory.resolveUser", elapsedMs: 5, failed: true },
  ]);
});

it("asks for the users resolved within one turn in one directory.resolveUsers and gives each caller its own reply", async () => {
  const requests: { type: string; userIds?: string[]; userId?: string }[] = [];
  const entryOf = (id: string) => ({
    type: "directory.entry" as const,
    entry: { kind: "user" as const, id, cellId: "a", epoch: 1 },
    placed: true,
  });
  const directory = connection.subscribe(directorySubject(namespace), {
    callback: (_error, message) => {
      const request = JSON.parse(new TextDecoder().decode(message.data)) as { type: string; userIds?: string[]; userId?: string };
      requests.push(request);
      if (request.type === "directory.resolveUser") message.respond(encodeJson(entryOf(request.userId ?? "")));
      if (request.type !== "directory.resolveUsers") return;
      const replies = (request.userIds ?? []).map((id): DirectoryReply => {
        if (id === "refused") return { type: "directory.error", code: "directory_unavailable", message: "forgotten" };
        // A directory that answered another user's entry in this place: the caller must not take it.
        if (id === "swapped") return entryOf("someone_else");
        return entryOf(id);
      });
      message.respond(encodeJson({ type: "directory.entries", replies }));
    },
  });
  await connection.flush();
  const ended: string[] = [];
  const client = new DirectoryClient(connection, namespace, 2_000, {
    observer: { requestEnded: (operation) => ended.push(operation) },
    monotonicNowMs: () => 0,
  });
  try {
    const outcomes = await Promise.allSettled(["alice", "refused", "bob", "swapped"].map((userId) => client.resolveUser(userId)));
    expect(outcomes[0]).toEqual({
      status: "fulfilled",
      value: { entry: { kind: "user", id: "alice", cellId: "a", epoch: 1 }, placed: true },
    });
    expect(outcomes[1]).toMatchObject({ status: "rejected", reason: { name: "RemoteError", code: "directory_unavailable" } });
    expect(outcomes[2]).toMatchObject({ status: "fulfilled", value: { entry: { id: "bob" } } });
    expect(outcomes[3]).toMatchObject({ status: "rejected", reason: { name: "RemoteError", code: "internal" } });
    expect(requests).toEqual([{ type: "directory.resolveUsers", userIds: ["alice", "refused", "bob", "swapped"] }]);

    // A lone user goes in the request every directory answers.
    expect((await client.resolveUser("carol")).entry.id).toBe("carol");
    expect(requests.slice(1)).toEqual([{ type: "directory.resolveUser", userId: "carol" }]);
    expect(ended).toEqual(["directory.resolveUsers", "directory.resolveUser"]);
  } finally {
    directory.unsubscribe();
  }
});
