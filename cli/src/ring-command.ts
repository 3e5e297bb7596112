// `cellwire ring <cellId> [--json]`: the members of a cell as its membership bucket shows them, the age
// of each lease (time since its last renewal, by the server's timestamp) and each member's share of the
// ring's key space.
import { connect } from "@nats-io/transport-node";
import {
  anonymousNatsAccess,
  decodeMessage,
  natsConnectOptions,
  openExistingMembershipBucket,
  Ring,
  type NatsAccess,
} from "@cellwire/cluster";
import { isCellId, workerLease, type WorkerLease } from "@cellwire/protocol";

export type RingMember = {
  readonly workerId: string;
  readonly leaseAgeMs: number;
  readonly leaseMs: number;
  readonly live: boolean;
  readonly share: number;
  readonly subject: string;
};

export type RingOptions = {
  readonly natsServers: readonly string[];
  readonly natsAccess?: NatsAccess;
  readonly namespace: string;
  readonly cellId: string;
  readonly json: boolean;
};

export async function runRing(options: RingOptions, nowMs: () => number = Date.now): Promise<number> {
  if (!isCellId(options.cellId)) {
    process.stderr.write(`cellwire: ${JSON.stringify(options.cellId)} is not a cell id\n`);
    return 2;
  }
  const connection = await connect({
    ...(await natsConnectOptions(options.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...options.natsServers],
    name: "cellwire-cli-ring",
  });
  try {
    let bucket;
    try {
      bucket = await openExistingMembershipBucket(connection, options.namespace, options.cellId);
    } catch {
      process.stderr.write(
        `cellwire: cell ${options.cellId} has no membership bucket in namespace ${options.namespace} (never started?)\n`,
      );
      return 1;
    }
    const leases: { lease: WorkerLease; ageMs: number }[] = [];
    // The key listing is a consumer over the live bucket: a key renewed while it runs can come twice.
    const keys = new Set<string>();
    for await (const key of await bucket.keys("worker.>")) keys.add(key);
    for (const key of keys) {
      const entry = await bucket.get(key);
      if (entry === null || entry.operation !== "PUT") continue;
      const decoded = decodeMessage(workerLease, entry.value);
      if (decoded.ok) leases.push({ lease: decoded.value, ageMs: Math.max(0, nowMs() - entry.created.getTime()) });
    }
    const live = leases.filter(({ lease, ageMs }) => ageMs <= lease.leaseMs);
    const shares = new Ring(live.map(({ lease }) => lease.workerId)).shares();
    const members: RingMember[] = leases
      .map(({ lease, ageMs }) => ({
        workerId: lease.workerId,
        leaseAgeMs: ageMs,
        leaseMs: lease.leaseMs,
        live: ageMs <= lease.leaseMs,
        share: shares.get(lease.workerId) ?? 0,
        subject: lease.subject,
      }))
      .sort((left, right) => (left.workerId < right.workerId ? -1 : 1));
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ cellId: options.cellId, namespace: options.namespace, members })}\n`);
    } else {
      process.stdout.write(`cell ${options.cellId} (namespace ${options.namespace}): ${live.length} live of ${members.length} leases\n`);
      process.stdout.write(`${"worker".padEnd(16)}${"lease age".padStart(12)}${"lease".padStart(10)}${"share".padStart(10)}  state\n`);
      for (const member of members) {
        process.stdout.write(
          `${member.workerId.padEnd(16)}${`${member.leaseAgeMs} ms`.padStart(12)}${`${member.leaseMs} ms`.padStart(10)}${`${(member.share * 100).toFixed(1)}%`.padStart(10)}  ${member.live ? "live" : "expired"}\n`,
        );
      }
    }
    return 0;
  } finally {
    await connection.close();
  }
}
