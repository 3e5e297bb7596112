// The tests' view of a NATS cluster: the cluster itself is production code (cli/src/nats-cluster.ts, what
// `cellwire up --nats-cluster` runs); what only tests ask of it lives here: which client connections a
// node serves and where a JetStream stream lives, read from the nodes' monitoring endpoints.
import type { NatsCluster } from "../src/nats-cluster.ts";

export { NatsCluster, NatsClusterError, startNatsCluster, type NatsClusterOptions, type NatsNode } from "../src/nats-cluster.ts";

/**
 * The settings of a topology on a 3-node cluster: membership buckets replicated on the three nodes, and
 * leases of 3 s, shorter than the election of the bucket's new stream leader (nats-server 2.9 waits a
 * random 4 to 9 s before a follower stands; 4 to 8 s were seen here): when the leader dies, the workers of
 * the cell cannot renew, drop out of the ring and rejoin after the election, which shows as a gap between
 * acks (2.7 to 4.9 s in three runs here, against 0.03 to 3 s with 12 s leases) but loses nothing. A membership
 * watcher whose consumer lived on the dead node sees nothing of that until it watches again, a lease
 * after its last entry (MembershipWatcher, docs/architecture.md "Past one machine").
 */
export const clusterTopologyEnvironment: Readonly<Record<string, string>> = {
  WORKER_KV_REPLICAS: "3",
  WORKER_LEASE_MS: "3000",
  WORKER_HEARTBEAT_INTERVAL_MS: "500",
  EDGE_LEASE_MS: "3000",
};

/** Where one stream lives: its leader and its other replicas, by server name. */
export type StreamPlacement = {
  readonly streamName: string;
  readonly leader: string | undefined;
  readonly replicaNames: readonly string[];
};

/** Connections listed by one /connz request (each test process holds one). */
const connectionsListedMax = 1024;
/** One monitoring request; a node that does not answer within it counts as unreachable. */
const monitorRequestTimeoutMs = 1000;

/** The names of the client connections a live node serves (each Cellwire process names its own). */
export async function connectionNames(cluster: NatsCluster, index: number): Promise<string[]> {
  const node = cluster.nodes[index];
  if (node === undefined) throw new Error(`no node ${index} in a cluster of ${cluster.nodes.length}`);
  return connectionNamesAt(node.monitorUrl);
}

/** The same, from a node's monitoring URL (a cluster another process started, as `cellwire up` prints it). */
export async function connectionNamesAt(monitorUrl: string): Promise<string[]> {
  const body = await fetchJson(`${monitorUrl}/connz?limit=${connectionsListedMax}`);
  const connections = isRecord(body) && Array.isArray(body["connections"]) ? body["connections"] : [];
  return connections.flatMap((connection) => (isRecord(connection) && typeof connection["name"] === "string" ? [connection["name"]] : []));
}

/** Where a JetStream stream lives, as the first live node that holds a replica of it reports. */
export async function streamPlacement(cluster: NatsCluster, streamName: string): Promise<StreamPlacement | undefined> {
  for (const [index, node] of cluster.nodes.entries()) {
    if (!cluster.isAlive(index)) continue;
    const body = await fetchJson(`${node.monitorUrl}/jsz?streams=true`).catch(() => undefined);
    const accounts = isRecord(body) && Array.isArray(body["account_details"]) ? body["account_details"] : [];
    for (const account of accounts) {
      const streams = isRecord(account) && Array.isArray(account["stream_detail"]) ? account["stream_detail"] : [];
      for (const stream of streams) {
        if (!isRecord(stream) || stream["name"] !== streamName || !isRecord(stream["cluster"])) continue;
        return { streamName, ...decodePlacement(stream["cluster"]) };
      }
    }
  }
  return undefined;
}

function decodePlacement(cluster: Record<string, unknown>): Omit<StreamPlacement, "streamName"> {
  const leader = typeof cluster["leader"] === "string" && cluster["leader"] !== "" ? cluster["leader"] : undefined;
  const replicas = Array.isArray(cluster["replicas"]) ? cluster["replicas"] : [];
  const replicaNames = replicas.flatMap((replica) => (isRecord(replica) && typeof replica["name"] === "string" ? [replica["name"]] : []));
  return { leader, replicaNames };
}

async function fetchJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(monitorRequestTimeoutMs) });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return (await response.json()) as unknown;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
