// NATS as the trust boundary (docs/decisions/0015), on a private nats-server started from the shipped
// configuration: a client without credentials cannot connect; edge credentials can neither publish a
// delivery nor ask a worker for an admin or peer request, nor read another service's requests or
// replies (the server refuses, and nats.js reports a permissions violation); and each service can do what
// it does (a worker holds a lease in its membership bucket, which an edge watches; a worker publishes
// deliveries an edge reads; a worker answers requests on its subjects).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, PermissionViolationError, type NatsConnection } from "@nats-io/transport-node";
import {
  anonymousNatsAccess,
  connectNats,
  LeaseHolder,
  MembershipWatcher,
  openExistingMembershipBucket,
  openMembershipBucket,
  Secret,
  type NatsAccess,
  type NatsService,
  type ServiceLogger,
} from "@cellwire/cluster";
import { deliveriesSubject, workerRequestSubject, workerSubject, type WorkerLease } from "@cellwire/protocol";
import { startPrivateNatsServer, type PrivateNatsServer } from "./private-nats-server.ts";
import { uniqueNamespace } from "./test-topology.ts";
import { silentServiceLogger } from "@cellwire/testkit";

const logger: ServiceLogger = silentServiceLogger;
const systemClock = { monotonicNowMs: () => performance.now(), wallNowMs: () => Date.now() };
const namespace = uniqueNamespace("perm");
const cellId = "a";
const workerId = "a-1";
const deadlineMs = 10_000;

let server: PrivateNatsServer | undefined;
const connections: NatsConnection[] = [];

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not set up`);
  return value;
}

/** Connects as a service, as the service's own process does (its user, its inbox prefix). */
async function connectAs(service: NatsService): Promise<NatsConnection> {
  const { user, password } = required(server, "server").user(service);
  const connection = await connect({
    servers: [required(server, "server").clientUrl],
    user,
    pass: password,
    inboxPrefix: `_INBOX.${service}`,
    maxReconnectAttempts: 0,
  });
  connections.push(connection);
  return connection;
}

/** The next permissions violation the server reports on `connection`. */
async function nextViolation(connection: NatsConnection): Promise<PermissionViolationError> {
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`no permissions violation within ${deadlineMs} ms`)), deadlineMs),
  );
  const violation = (async () => {
    for await (const status of connection.status()) {
      if (status.type === "error" && status.error instanceof PermissionViolationError) return status.error;
    }
    throw new Error("the connection closed without a permissions violation");
  })();
  return Promise.race([violation, timeout]);
}

beforeAll(async () => {
  server = await startPrivateNatsServer();
});

afterAll(async () => {
  await Promise.all(connections.map((connection) => connection.close().catch(() => undefined)));
  await server?.stop();
});

describe("the shipped NATS configuration", () => {
  it("refuses a client without credentials, or with another service's password", async () => {
    const clientUrl = required(server, "server").clientUrl;
    await expect(connect({ servers: [clientUrl], maxReconnectAttempts: 0, reconnect: false })).rejects.toThrow(/authorization/i);
    const { password } = required(server, "server").user("worker");
    await expect(
      connect({ servers: [clientUrl], user: "edge", pass: password, maxReconnectAttempts: 0, reconnect: false }),
    ).rejects.toThrow(/authorization/i);
  });

  it("refuses an edge that publishes a delivery, which therefore never reaches another edge, while a worker's does", async () => {
    const [forger, reader, worker] = [await connectAs("edge"), await connectAs("edge"), await connectAs("worker")];
    const received: string[] = [];
    reader.subscribe(deliveriesSubject(namespace), {
      callback: (error, message) => void (error === null && received.push(message.string())),
    });
    await reader.flush();
    const violation = nextViolation(forger);
    const forged = {
      type: "delivery.batch",
      messages: [],
      events: [{ recipientUserId: "bob", seq: Number.MAX_SAFE_INTEGER, event: { kind: "joined" } }],
      typing: [],
    };
    forger.publish(deliveriesSubject(namespace), JSON.stringify(forged));
    expect(await violation).toMatchObject({ operation: "publish", subject: deliveriesSubject(namespace) });
    await forger.flush();
    // Published after the forgery was processed: if the forgery had gone through, it would arrive first.
    worker.publish(deliveriesSubject(namespace), "from a worker");
    await worker.flush();
    await waitFor(() => received.length > 0);
    expect(received).toEqual(["from a worker"]);
  });

  it("refuses an edge that sends a worker an admin or peer request, and lets it send an edge request", async () => {
    const [edge, worker] = [await connectAs("edge"), await connectAs("worker")];
    const subjects = {
      edge: workerRequestSubject(namespace, cellId, workerId, "edge"),
      peer: workerRequestSubject(namespace, cellId, workerId, "peer"),
      admin: workerRequestSubject(namespace, cellId, workerId, "admin"),
    };
    for (const subject of Object.values(subjects))
      worker.subscribe(subject, {
        callback: (error, message) => void (error === null && message.respond(`answered on ${message.subject}`)),
      });
    await worker.flush();
    for (const channel of ["admin", "peer"] as const) {
      const violation = nextViolation(edge);
      edge.publish(subjects[channel], JSON.stringify({ type: "cell.migrate", kind: "user", id: "alice", toCellId: "b" }));
      expect(await violation).toMatchObject({ operation: "publish", subject: subjects[channel] });
    }
    const reply = await edge.request(subjects.edge, "{}", { timeout: deadlineMs });
    expect(reply.string()).toBe(`answered on ${subjects.edge}`);
    // The admin's credentials reach the admin subject, and nothing else of a worker's.
    const admin = await connectAs("admin");
    expect((await admin.request(subjects.admin, "{}", { timeout: deadlineMs })).string()).toBe(`answered on ${subjects.admin}`);
    const adminViolation = nextViolation(admin);
    admin.publish(subjects.edge, "{}");
    expect(await adminViolation).toMatchObject({ operation: "publish", subject: subjects.edge });
  });

  it("refuses an edge that subscribes to workers' requests, other services' replies or the directory's requests", async () => {
    const edge = await connectAs("edge");
    for (const subject of [
      `${workerSubject(namespace, cellId, workerId)}.>`,
      "_INBOX.worker.>",
      "_INBOX.>",
      `${namespace}.directory.request`,
    ]) {
      const violation = nextViolation(edge);
      edge.subscribe(subject);
      expect(await violation).toMatchObject({ operation: "subscription", subject });
    }
  });

  it("lets a worker hold a lease in its cell's membership bucket, which an edge watches but cannot write", async () => {
    const workerConnection = await connectNats(
      [required(server, "server").clientUrl],
      "permissions-worker",
      logger,
      serviceAccess("worker"),
    );
    connections.push(workerConnection);
    const bucket = await openMembershipBucket(workerConnection, namespace, cellId, 2000);
    const lease: WorkerLease = {
      workerId,
      cellId,
      subject: workerSubject(namespace, cellId, workerId),
      startedAtMs: Date.now(),
      leaseMs: 2000,
    };
    const holder = new LeaseHolder(bucket, lease, 200, systemClock, logger);
    await holder.start();
    try {
      const edgeConnection = await connectNats([required(server, "server").clientUrl], "permissions-edge", logger, serviceAccess("edge"));
      connections.push(edgeConnection);
      const watched = await openExistingMembershipBucket(edgeConnection, namespace, cellId);
      const watcher = new MembershipWatcher(watched, cellId, 100, systemClock, logger);
      await watcher.start();
      await watcher.ready;
      await waitFor(() => watcher.snapshot.ring.ownerOf("anything") === workerId);
      const violation = nextViolation(edgeConnection);
      await watched.put(`worker.${workerId}`, JSON.stringify({ ...lease, subject: "evil" })).catch(() => undefined);
      expect((await violation).subject).toMatch(/^\$KV\./);
      watcher.stop();
    } finally {
      await holder.stop();
    }
  });
});

/** A service's NatsAccess as its config would read it from CELLWIRE_NATS_USER and CELLWIRE_NATS_PASSWORD. */
function serviceAccess(service: NatsService): NatsAccess {
  const { user, password } = required(server, "server").user(service);
  return { ...anonymousNatsAccess(service), user, password: new Secret(password) };
}

async function waitFor(condition: () => boolean): Promise<void> {
  const deadlineAt = performance.now() + deadlineMs;
  while (!condition()) {
    if (performance.now() > deadlineAt) throw new Error(`condition not met within ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
