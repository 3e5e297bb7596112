// Failover benchmark: how long after SIGKILL of a conversation's owner worker is the conversation served
// again? Runs a real topology (one cell of three workers, one edge) on a fresh namespace, kills the owner
// of a conversation `--kills` times (respawning it each time so the cell keeps three workers), and prints
// each takeover time and their distribution. The takeover time is from the kill to the ack of a send
// issued right after it (the SDK and the edge retry until the successor serves).
//
//   npm run bench:failover -- [--kills 20] [--lease-ms 1500] [--heartbeat-ms 300]
import { parseArgs } from "node:util";
import { WebSocket } from "ws";
import { CellwireClient } from "@cellwire/client";
import { Ring } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { percentile } from "../statistics.ts";
import { startTestTopology } from "../test-topology.ts";

const { values } = parseArgs({
  options: {
    kills: { type: "string", default: "20" },
    "lease-ms": { type: "string", default: "1500" },
    "heartbeat-ms": { type: "string", default: "300" },
  },
});
const kills = Number(values.kills);
const leaseMs = Number(values["lease-ms"]);
const heartbeatMs = Number(values["heartbeat-ms"]);
if (![kills, leaseMs, heartbeatMs].every((value) => Number.isSafeInteger(value) && value > 0))
  throw new Error("--kills, --lease-ms and --heartbeat-ms take positive integers");

const workerIds = ["a-1", "a-2", "a-3"];
process.stdout.write(`failover bench: ${kills} kills, lease ${leaseMs} ms, heartbeat ${heartbeatMs} ms; starting the topology…\n`);
const test = await startTestTopology({
  label: "bench",
  cells: [{ cellId: "a", workerCount: workerIds.length }],
  edgeCount: 1,
  extraEnvironment: { WORKER_LEASE_MS: String(leaseMs), WORKER_HEARTBEAT_INTERVAL_MS: String(heartbeatMs), EDGE_LEASE_MS: String(leaseMs) },
});
const client = new CellwireClient({
  url: test.topology.edges.map((edge) => edge.webSocketUrl),
  deviceId: "bench",
  WebSocket,
  requestTimeoutMs: 30_000,
  tokenProvider: () => signDevToken(defaultDevKeyDirectory, "bench-alice", { deviceId: "bench" }),
});
const takeoversMs: number[] = [];
try {
  await client.connect();
  // One conversation per worker, so each kill can target the owner of one of them.
  const ring = new Ring(workerIds);
  const conversationOf = new Map<string, string>();
  for (let peer = 0; conversationOf.size < workerIds.length && peer < 1000; peer++) {
    const conversation = await client.openDirect(`bench-peer-${peer}`);
    const owner = ring.ownerOf(conversation.conversationId);
    if (owner !== undefined && !conversationOf.has(owner)) conversationOf.set(owner, conversation.conversationId);
  }
  for (let kill = 0; kill < kills; kill++) {
    const victim = workerIds[kill % workerIds.length] ?? "a-1";
    const conversationId = conversationOf.get(victim);
    if (conversationId === undefined) throw new Error(`no conversation owned by ${victim}`);
    await client.send(conversationId, `before kill ${kill}`);
    const processName = `cellwire-worker-${victim}`;
    const killedAt = performance.now();
    const exited = test.topology.signal(processName, "SIGKILL");
    await client.send(conversationId, `after kill ${kill}`);
    const takeoverMs = performance.now() - killedAt;
    takeoversMs.push(takeoverMs);
    process.stdout.write(`kill ${String(kill + 1).padStart(2)}/${kills}: ${victim} → served again after ${takeoverMs.toFixed(0)} ms\n`);
    await exited;
    await test.topology.respawn(processName);
    // Let the respawned worker's lease reach every watcher before the next kill, so each kill starts
    // from a full ring: wait until a send to its conversation is served by it again (its ring change).
    await client.send(conversationId, `after respawn ${kill}`);
  }
} finally {
  client.close();
  await test.destroy();
}
const sorted = [...takeoversMs].sort((left, right) => left - right);
const mean = sorted.reduce((sum, value) => sum + value, 0) / Math.max(1, sorted.length);
process.stdout.write(
  [
    "",
    `takeover after SIGKILL over ${sorted.length} kills (ms): min ${sorted[0]?.toFixed(0)}, p50 ${(percentile(sorted, 50) ?? Number.NaN).toFixed(0)}, p90 ${(percentile(sorted, 90) ?? Number.NaN).toFixed(0)}, p99 ${(percentile(sorted, 99) ?? Number.NaN).toFixed(0)}, max ${sorted.at(-1)?.toFixed(0)}, mean ${mean.toFixed(0)}`,
    `under 2000 ms: ${sorted.filter((value) => value < 2000).length} of ${sorted.length}`,
    "",
  ].join("\n"),
);
