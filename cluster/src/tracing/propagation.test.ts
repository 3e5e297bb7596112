// Where the trace context leaves a process: the send batcher (one context per send of a batch) and
// requestJson (the active span's), over a fake NATS connection that records what is published. With
// tracing off nothing is added to a publish: no headers object at all.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { cellReply, type CellSendRequest } from "@cellwire/protocol";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { requestJson } from "../nats-json.ts";
import { RequestBatcher, sendBatches } from "../request-batcher.ts";
import { createOtelTracing } from "./otel-tracing.ts";
import { installTracing, type TraceContext } from "./tracing.ts";

type Published = { readonly subject: string; readonly options: { reply: string; headers?: MsgHdrs } };

/** The part of a NatsConnection a RequestMux uses; requests are recorded and never answered. */
class RecordingConnection {
  readonly published: Published[] = [];
  subscribe(): { closed: Promise<void>; unsubscribe(): void } {
    return { closed: new Promise<void>(() => undefined), unsubscribe: () => undefined };
  }
  publish(subject: string, _payload: unknown, options: { reply: string; headers?: MsgHdrs }): void {
    this.published.push({ subject, options });
  }
  async *status(): AsyncIterable<never> {}
  asNatsConnection(): NatsConnection {
    return this as unknown as NatsConnection;
  }
}

const collector = createServer((request, response) => {
  request.resume();
  request.on("end", () => response.writeHead(200, { "content-type": "application/json" }).end("{}"));
});
await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
const tracing = createOtelTracing({
  otlpEndpoint: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
  serviceName: "cellwire-test",
  processName: "test",
});

afterEach(() => installTracing(undefined));
afterAll(async () => {
  await tracing.shutdown();
  await new Promise<void>((resolve) => collector.close(() => resolve()));
});

function send(index: number): CellSendRequest {
  return {
    type: "cell.send",
    senderUserId: "alice",
    senderDeviceId: "phone",
    conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA",
    clientMessageId: `c-${index}`,
    body: "hi",
  };
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("trace context on NATS requests", () => {
  it("is absent with tracing off: the batch and a request are published with a reply subject only", async () => {
    const connection = new RecordingConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    void batcher.request("worker.1", send(1), 1000).catch(() => undefined);
    void batcher.request("worker.1", send(2), 1000).catch(() => undefined);
    void requestJson(connection.asNatsConnection(), "worker.2", { type: "cell.stats" }, cellReply, 1000, "cell_unavailable").catch(
      () => undefined,
    );
    await nextTurn();
    expect(connection.published.map(({ options }) => Object.keys(options))).toEqual([["reply"], ["reply"]]);
  });

  it("carries each send's span in the batch's headers, in send order, and the active span on a request", async () => {
    installTracing(tracing);
    const connection = new RecordingConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const contexts: (TraceContext | undefined)[] = [];
    for (const index of [1, 2]) {
      void tracing.inSpan("edge.send", {}, async () => {
        contexts.push(tracing.activeContext());
        await batcher.request("worker.1", send(index), 1000).catch(() => undefined);
      });
    }
    // A send made outside any span has no context: its value is the placeholder, the others stay in place.
    void batcher.request("worker.1", send(3), 1000).catch(() => undefined);
    let requestContext: TraceContext | undefined;
    void tracing.inSpan("edge.request", {}, async () => {
      requestContext = tracing.activeContext();
      await requestJson(connection.asNatsConnection(), "worker.2", { type: "cell.stats" }, cellReply, 1000, "cell_unavailable").catch(
        () => undefined,
      );
    });
    await nextTurn();
    const batch = connection.published.find((item) => item.subject === "worker.1")?.options.headers;
    expect(tracing.extractEach(batch, 3).map((context) => context?.spanId)).toEqual([contexts[0]?.spanId, contexts[1]?.spanId, undefined]);
    expect(batch?.values("traceparent")).toHaveLength(2);
    const request = connection.published.find((item) => item.subject === "worker.2")?.options.headers;
    expect(tracing.extract(request)).toMatchObject({ traceId: requestContext?.traceId, spanId: requestContext?.spanId });
  });
});
