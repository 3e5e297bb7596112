// The launcher's control subject: `cellwire add-cell` asks the running local topology (`npm start`, or a
// test's) to start a new cell's workers, which become its children and stop with it. In production an
// orchestrator starts workers; the add-cell command then only waits for them.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { decodeMessage, encodeJson } from "@cellwire/cluster";
import { topologyRequest, topologySubject, type TopologyReply } from "@cellwire/protocol";
import type { Topology } from "./topology.ts";

/** Serves topology.addCell for `topology`; one addCell at a time, so two racing asks cannot both start a cell. */
export function serveTopologyControl(connection: NatsConnection, namespace: string, topology: () => Topology): Subscription {
  let busy: Promise<unknown> = Promise.resolve();
  return connection.subscribe(topologySubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const respond = (reply: TopologyReply): void => {
        message.respond(encodeJson(reply));
      };
      const decoded = decodeMessage(topologyRequest, message.data);
      if (!decoded.ok) {
        respond({ type: "topology.error", message: `the request does not decode: ${decoded.reason}` });
        return;
      }
      const { cellId, workers, weight } = decoded.value;
      busy = busy.then(async () => {
        try {
          const workerIds = await topology().addCell(cellId, workers, weight);
          respond({ type: "topology.cellStarted", cellId, workerIds });
        } catch (failure) {
          respond({ type: "topology.error", message: (failure instanceof Error ? failure.message : String(failure)).slice(0, 1000) });
        }
      });
    },
  });
}
