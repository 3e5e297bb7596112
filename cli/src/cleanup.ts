// Removes everything a namespace created on the shared services: the cells' databases, the membership
// buckets and the directory's Redis keys. Tests call it in afterAll so the machine is left as found.
import { Redis } from "ioredis";
import { connect } from "@nats-io/transport-node";
import { anonymousNatsAccess, destroyMembershipBucket, natsConnectOptions, type NatsAccess } from "@cellwire/cluster";
import { dropCellDatabase } from "@cellwire/cells";
import { RedisDirectory } from "@cellwire/directory";

export type NamespaceResources = {
  readonly namespace: string;
  readonly cellIds: readonly string[];
  readonly natsServers: readonly string[];
  /** Deleting buckets takes the admin user on a server that asks for credentials. */
  readonly natsAccess?: NatsAccess;
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
};

export async function destroyNamespace(resources: NamespaceResources): Promise<void> {
  const problems: string[] = [];
  const connection = await connect({
    ...(await natsConnectOptions(resources.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...resources.natsServers],
  });
  for (const cellId of resources.cellIds) {
    await destroyMembershipBucket(connection, resources.namespace, cellId).catch((error: unknown) =>
      problems.push(`bucket ${cellId}: ${String(error)}`),
    );
    await dropCellDatabase(resources.postgresAdminUrl, resources.namespace, cellId).catch((error: unknown) =>
      problems.push(`database ${cellId}: ${String(error)}`),
    );
  }
  await connection.close();
  const redis = new Redis(resources.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await new RedisDirectory(redis, resources.namespace).destroyNamespace();
  } catch (error) {
    problems.push(`redis: ${String(error)}`);
  } finally {
    redis.disconnect();
  }
  if (problems.length > 0) throw new Error(`cleanup of ${resources.namespace} left: ${problems.join("; ")}`);
}
