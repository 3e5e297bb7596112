// A worker that starts while its NATS server answers no JetStream request (a cluster electing its meta
// leader, a server coming up) waits for JetStream instead of failing to start (cluster/src/membership.ts,
// openMembershipBucket). Here a nats-server of this test's own starts without JetStream, the bucket is
// asked for, and once the server has refused a JetStream request the same server comes back on the same
// port with JetStream: the bucket is then opened, on the client's reconnect, without a second call.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { destroyMembershipBucket, openMembershipBucket } from "@cellwire/cluster";
import { membershipBucket } from "@cellwire/protocol";
import { defaultServerBinary, freeLoopbackPorts } from "./nats-server-process.ts";
import { pollUntil } from "@cellwire/testkit";

const waitDeadlineMs = 10_000;

const started: ChildProcess[] = [];
let connection: NatsConnection | undefined;
let storeDirectory: string | undefined;

afterEach(async () => {
  await connection?.close();
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  if (storeDirectory !== undefined) await rm(storeDirectory, { recursive: true, force: true });
});

function startServer(args: readonly string[]): ChildProcess {
  const child = spawn(defaultServerBinary(), [...args], { stdio: "ignore" });
  started.push(child);
  return child;
}

/** Messages the server has received (its /varz), 0 while its monitor does not answer. */
async function messagesReceived(monitorPort: number): Promise<number> {
  const varz = await fetch(`http://127.0.0.1:${monitorPort}/varz`).catch(() => undefined);
  if (varz === undefined || !varz.ok) return 0;
  const body = (await varz.json()) as { in_msgs?: unknown };
  return typeof body.in_msgs === "number" ? body.in_msgs : 0;
}

it("opens the membership bucket once the server it is connected to answers JetStream, not failing before", async () => {
  const [port, monitorPort] = await freeLoopbackPorts(2);
  if (port === undefined || monitorPort === undefined) throw new Error("no free ports");
  storeDirectory = await mkdtemp(join(tmpdir(), "cellwire-jetstream-wait-"));
  const common = ["-a", "127.0.0.1", "-p", String(port), "-m", String(monitorPort)];
  const withoutJetStream = startServer(common);
  const client = await pollUntil(
    "a connection to the server without JetStream",
    () => connect({ servers: `127.0.0.1:${port}`, reconnectTimeWait: 100, maxReconnectAttempts: -1 }).catch(() => undefined),
    { deadlineMs: waitDeadlineMs, intervalMs: 50 },
  );
  connection = client;
  const namespace = `jswait${Date.now().toString(36)}`;
  let settled: "opened" | "failed" | undefined;
  const opening = openMembershipBucket(client, namespace, "a", 1500).then(
    (bucket) => {
      settled = "opened";
      return bucket;
    },
    (error: unknown) => {
      settled = "failed";
      throw error;
    },
  );
  // The first create (and its open) went to the server and found no JetStream responder.
  await pollUntil(
    "the bucket's first JetStream requests at the server",
    async () => ((await messagesReceived(monitorPort)) >= 2 ? true : undefined),
    {
      deadlineMs: waitDeadlineMs,
    },
  );
  expect(settled).toBeUndefined();
  withoutJetStream.kill("SIGKILL");
  await new Promise<void>((resolve) => withoutJetStream.once("exit", () => resolve()));
  startServer([...common, "-js", "-sd", storeDirectory]);
  const bucket = await opening;
  expect(settled).toBe("opened");
  expect((await bucket.status()).bucket).toBe(membershipBucket(namespace, "a"));
  await destroyMembershipBucket(client, namespace, "a");
});
