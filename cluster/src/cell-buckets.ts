// The cells of a namespace as NATS knows them: from the names of their membership buckets' streams.
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { isCellId, membershipBucket } from "@cellwire/protocol";
import { UnavailableError } from "./errors.ts";

/**
 * The cells of a namespace that ever started a worker here, from the names of their membership buckets'
 * streams (`KV_<namespace>_members_<cellId>`): the one record of the cells outside the directory's store,
 * so a directory that lost its store knows whom to ask (docs/decisions/0023). Reads stream names only
 * ($JS.API.STREAM.NAMES). More than `cellsMax` cells is an error, not a silently shortened list.
 */
export async function listCellIds(connection: NatsConnection, namespace: string, cellsMax: number): Promise<string[]> {
  const manager = await jetstreamManager(connection, { checkAPI: false });
  const streamPrefix = `KV_${membershipBucket(namespace, "a").slice(0, -1)}`;
  const cellIds: string[] = [];
  for await (const name of manager.streams.names()) {
    if (!name.startsWith(streamPrefix)) continue;
    const cellId = name.slice(streamPrefix.length);
    // A cell id has no underscore, so another namespace's bucket (`<namespace>_members_x_members_y`) is no match.
    if (!isCellId(cellId)) continue;
    if (cellIds.length >= cellsMax)
      throw new UnavailableError("directory_unavailable", `more than ${cellsMax} membership buckets in namespace ${namespace}`);
    cellIds.push(cellId);
  }
  return cellIds.sort();
}
