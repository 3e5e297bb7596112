// Answers cell.inventory: what this cell holds, page by page, for a directory rebuilding a store that lost
// its data (docs/decisions/0023). Every worker of the cell subscribes in one queue group and any of them
// answers from the shared database: the listing reads rows, not the ring, so ownership does not matter.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { ServiceLogger } from "@cellwire/cluster";
import { decodeMessage, encodeJson } from "@cellwire/cluster";
import { cellInventoryRequest, cellInventorySubject, type CellInventoryAnswer, type CellInventoryRequest } from "@cellwire/protocol";
import { cellErrorReply } from "./cell-error-reply.ts";
import type { ConversationStore } from "./store/store.ts";

export const inventoryQueueGroup = "inventory";

/**
 * One page: `limit` + 1 rows are read so that `done` is known without a further request. A failure is
 * answered as every other cell request's (cellErrorReply): a database away is a retryable cell_unavailable.
 */
export async function answerInventory(
  store: Pick<ConversationStore, "inventory">,
  cell: { readonly cellId: string; readonly weight: number },
  request: CellInventoryRequest,
): Promise<CellInventoryAnswer> {
  try {
    const rows = await store.inventory(request.kind, request.afterId, request.limit + 1);
    const keys = rows.slice(0, request.limit);
    return {
      type: "cell.inventoryPage",
      cellId: cell.cellId,
      weight: cell.weight,
      kind: request.kind,
      keys,
      done: rows.length <= request.limit,
    };
  } catch (error) {
    return cellErrorReply({ kind: "error", error });
  }
}

/**
 * Subscribes this worker to its cell's inventory subject. At most `inFlightMax` pages are read at once;
 * past it a request is answered overloaded at once (the rebuilder retries), not queued.
 */
export function serveInventory(
  connection: NatsConnection,
  namespace: string,
  cell: { readonly cellId: string; readonly weight: number },
  store: Pick<ConversationStore, "inventory">,
  inFlightMax: number,
  logger: ServiceLogger,
): Subscription {
  const subject = cellInventorySubject(namespace, cell.cellId);
  let inFlight = 0;
  return connection.subscribe(subject, {
    queue: inventoryQueueGroup,
    callback: (error, message) => {
      if (error !== null) {
        logger.warn(`subscription ${subject} failed: ${error.message}`);
        return;
      }
      const respond = (reply: CellInventoryAnswer): void => {
        if (!message.respond(encodeJson(reply))) logger.warn(`a request on ${subject} had no reply subject`);
      };
      const decoded = decodeMessage(cellInventoryRequest, message.data);
      if (!decoded.ok) {
        respond(cellErrorReply({ kind: "bad_payload", reason: decoded.reason }));
        return;
      }
      if (inFlight >= inFlightMax) {
        respond(cellErrorReply({ kind: "overloaded", reason: "queue_full", detail: `${inFlightMax} inventory pages are being read` }));
        return;
      }
      inFlight++;
      void answerInventory(store, cell, decoded.value)
        .then(respond)
        .finally(() => inFlight--);
    },
  });
}
