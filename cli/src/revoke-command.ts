// `cellwire revoke <userId>`: closes every session of a user on every edge (4103, token_revoked) and makes
// the edges refuse the user's tokens issued until now, for their EDGE_REVOCATION_RETENTION_MS.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { anonymousNatsAccess, encodeJson, natsConnectOptions } from "@cellwire/cluster";
import { isUserId, revocationsSubject, type SessionRevoke } from "@cellwire/protocol";
import type { OperatorOptions } from "./migration-commands.ts";

/**
 * Publishes a revocation of `userId` at `revokedAtMs` (this machine's wall clock) and waits until the NATS
 * server has it. Edges receive it as a core publish: one that is disconnected at the time misses it.
 */
export async function publishRevocation(connection: NatsConnection, namespace: string, userId: string, revokedAtMs: number): Promise<void> {
  if (!isUserId(userId)) throw new TypeError(`${JSON.stringify(userId)} is not a user id`);
  const revoke: SessionRevoke = { type: "session.revoke", userId, revokedAtMs };
  connection.publish(revocationsSubject(namespace), encodeJson(revoke));
  await connection.flush();
}

export async function runRevoke(userId: string, options: OperatorOptions): Promise<number> {
  if (!isUserId(userId)) {
    process.stderr.write(`cellwire: ${JSON.stringify(userId)} is not a user id\n`);
    return 2;
  }
  const connection = await connect({
    ...(await natsConnectOptions(options.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...options.natsServers],
    name: "cellwire-cli-revoke",
  });
  try {
    const revokedAtMs = Date.now();
    await publishRevocation(connection, options.namespace, userId, revokedAtMs);
    if (options.json) process.stdout.write(`${JSON.stringify({ userId, revokedAtMs })}\n`);
    else
      process.stdout.write(
        `revoked the sessions of ${userId} on every connected edge; their tokens issued before ${new Date(revokedAtMs).toISOString()} are refused\n`,
      );
    return 0;
  } finally {
    await connection.close();
  }
}
