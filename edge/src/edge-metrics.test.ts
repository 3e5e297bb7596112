// The edge's counts, read back the way Prometheus reads them (a scrape parsed strictly): sessions on fake
// sockets drive an EdgeMetrics, and the scrape must show each frame, send, ack, latency and close counted
// once, under a label from the protocol's closed sets, never a client's string.
import { afterEach, describe, expect, it } from "vitest";
import { closeCodes, standardCloseCodes, type Message } from "@cellwire/protocol";
import { parsePrometheusText, type PrometheusScrape } from "@cellwire/testkit";
import { createEdgeDirectoryCache } from "./directory-cache.ts";
import { DirectoryProbe, directoryProbeIntervalMs, edgeReadinessChecks } from "./edge-health.ts";
import { EdgeMetrics } from "./edge-metrics.ts";
import { readinessReport } from "@cellwire/cluster";
import { fakeEdge, type FakeEdge } from "../test/edge-fakes.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const edges: FakeEdge[] = [];

afterEach(() => {
  for (const edge of edges.splice(0)) edge.core.closeAll();
});

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function storedMessage(clientMessageId: string, sentAtMs: number): Message {
  return {
    conversationId: groupId,
    messageId: `m-${clientMessageId}`,
    seq: 1,
    senderUserId: "alice",
    senderDeviceId: "phone",
    clientMessageId,
    body: "hello",
    sentAtMs,
  };
}

/** A fake edge counting into `metrics`, whose group stores each send `storeMs` after it reaches the cell. */
function countedEdge(metrics: EdgeMetrics, storeMs: number): FakeEdge {
  const edge = fakeEdge({}, { metrics, directoryCacheLookups: (result) => metrics.directoryCacheLookup(result) });
  edges.push(edge);
  edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
  edge.router.answers.set("cell.send", async (_cellId, request) => {
    if (request.type !== "cell.send") throw new Error("routed wrongly");
    edge.clock.advance(storeMs);
    return { type: "cell.stored", message: storedMessage(request.clientMessageId, edge.clock.wallMs), deduplicated: false };
  });
  metrics.observe({
    sessions: () => edge.core.sessionCounts(),
    natsConnected: () => true,
    directoryReachable: () => true,
  });
  return edge;
}

async function scrape(metrics: EdgeMetrics): Promise<PrometheusScrape> {
  return parsePrometheusText(await metrics.scrape());
}

describe("EdgeMetrics over sessions", () => {
  it("counts frames by type (an unknown or malformed one as unknown), sends, acks and the send→ack latency", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    const edge = countedEdge(metrics, 30);
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "ping", requestId: "p1" });
    transport.receiveJson({ type: "send", requestId: "s1", conversationId: groupId, clientMessageId: "c1", body: "hi" });
    // One at a time, so that each waits its own 30 ms on the fake clock.
    await transport.frame((frame) => frame["requestId"] === "s1" && frame["type"] === "ack");
    transport.receiveJson({ type: "send", requestId: "s2", conversationId: groupId, clientMessageId: "c2", body: "hi" });
    transport.receiveJson({ type: "evil-type-alice", requestId: "x1" });
    transport.receive("not json");
    await transport.frame((frame) => frame["requestId"] === "s2" && frame["type"] === "ack");
    await settle();

    const scraped = await scrape(metrics);
    const received = (type: string): number => scraped.sum("cellwire_edge_frames_received_total", { type });
    expect([received("hello"), received("ping"), received("send"), received("unknown")]).toEqual([1, 1, 2, 2]);
    const sent = (type: string): number => scraped.sum("cellwire_edge_frames_sent_total", { type });
    expect([sent("welcome"), sent("pong"), sent("ack"), sent("error")]).toEqual([1, 1, 2, 2]);
    expect(scraped.sum("cellwire_edge_errors_sent_total", { code: "unknown_frame_type" })).toBe(1);
    expect(scraped.sum("cellwire_edge_errors_sent_total", { code: "malformed_frame" })).toBe(1);
    expect(scraped.sum("cellwire_edge_connections_opened_total")).toBe(1);
    expect(scraped.sum("cellwire_edge_sends_total")).toBe(2);
    expect(scraped.sum("cellwire_edge_acks_total", { outcome: "stored" })).toBe(2);
    expect(scraped.sum("cellwire_edge_acks_total", { outcome: "retryable" })).toBe(0);
    // Each send waited 30 ms (the fake cell's clock) before its ack: both in the 0.05 s bucket, none below.
    expect(scraped.sum("cellwire_edge_send_ack_seconds_count")).toBe(2);
    expect(scraped.sum("cellwire_edge_send_ack_seconds_bucket", { le: "0.025" })).toBe(0);
    expect(scraped.sum("cellwire_edge_send_ack_seconds_bucket", { le: "0.05" })).toBe(2);
    expect(scraped.sum("cellwire_edge_send_ack_seconds_sum")).toBeCloseTo(0.06, 6);
    expect(scraped.sum("cellwire_edge_sessions", { state: "welcomed" })).toBe(1);
    expect(scraped.sum("cellwire_edge_sessions", { state: "awaiting_hello" })).toBe(0);
    // The client's own strings (its user id, its made-up frame type) are in no label.
    const labelValues = scraped.samples.flatMap((sample) => Object.values(sample.labels));
    expect(labelValues.filter((value) => value.includes("alice") || value.includes("evil"))).toEqual([]);
  });

  it("counts a refused send by its answer, and a send refused before service not as a send", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    const edge = countedEdge(metrics, 0);
    edge.router.answers.set("cell.send", () => Promise.resolve({ type: "cell.error", code: "not_a_member", message: "no" }));
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "send", requestId: "s1", conversationId: groupId, clientMessageId: "c1", body: "hi" });
    await transport.frame((frame) => frame["requestId"] === "s1");
    await settle();
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_acks_total", { outcome: "final" })).toBe(1);
    expect(scraped.sum("cellwire_edge_send_ack_seconds_count")).toBe(0);
    expect(scraped.sum("cellwire_edge_errors_sent_total", { code: "not_a_member" })).toBe(1);
  });

  it("observes a live delivery's latency from the cell's sentAtMs to its write, and counts its frame", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    const edge = countedEdge(metrics, 0);
    const { transport } = await edge.authenticated("bob");
    edge.deliveries.publishMessage("bob", storedMessage("c9", edge.clock.wallMs - 120));
    await transport.frame((frame) => frame["type"] === "message");
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_send_delivery_seconds_count")).toBe(1);
    expect(scraped.sum("cellwire_edge_send_delivery_seconds_sum")).toBeCloseTo(0.12, 6);
    expect(scraped.sum("cellwire_edge_frames_sent_total", { type: "message" })).toBe(1);
  });

  it("shows sessions awaiting their hello, and welcomed ones as draining once the edge drains", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    const edge = countedEdge(metrics, 0);
    await edge.authenticated("alice");
    edge.connect();
    let scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_sessions", { state: "awaiting_hello" })).toBe(1);
    expect(scraped.sum("cellwire_edge_sessions", { state: "welcomed" })).toBe(1);
    const drained = edge.core.drainSessions(
      { drainMs: 60_000, graceMs: 1000 },
      { monotonicNowMs: () => 0, random: () => 0.99, setTimer: () => () => {} },
    );
    scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_sessions", { state: "draining" })).toBe(1);
    expect(scraped.sum("cellwire_edge_sessions", { state: "welcomed" })).toBe(0);
    edge.core.closeAll();
    await drained;
  });
});

describe("EdgeMetrics from the server and the router", () => {
  it("counts closes by code, any code outside the protocol's as other, and upgrade refusals by reason", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    metrics.socketClosed(closeCodes.going_away.code);
    metrics.socketClosed(standardCloseCodes.normal);
    metrics.socketClosed(4999);
    metrics.socketClosed(3123);
    metrics.upgradeRefused("origin_not_allowed");
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_closes_total", { code: "4000" })).toBe(1);
    expect(scraped.sum("cellwire_edge_closes_total", { code: "1000" })).toBe(1);
    expect(scraped.sum("cellwire_edge_closes_total", { code: "other" })).toBe(2);
    expect(scraped.find("cellwire_edge_closes_total", { code: "4999" })).toEqual([]);
    expect(scraped.sum("cellwire_edge_upgrades_refused_total", { reason: "origin_not_allowed" })).toBe(1);
    expect(scraped.sum("cellwire_edge_upgrades_refused_total", { reason: "unauthenticated_full" })).toBe(0);
  });

  it("counts cell requests' latency by kind and their failures by kind and code", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    metrics.cellRequests.requestEnded("cell.send", 3, undefined);
    metrics.cellRequests.requestEnded("cell.send", 40, "cell_unavailable");
    metrics.cellRequests.requestEnded("cell.mailboxPage", 1, undefined);
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_cell_request_seconds_count", { kind: "cell.send" })).toBe(2);
    expect(scraped.sum("cellwire_edge_cell_request_seconds_count", { kind: "cell.mailboxPage" })).toBe(1);
    expect(scraped.sum("cellwire_edge_cell_request_errors_total", { kind: "cell.send", code: "cell_unavailable" })).toBe(1);
    expect(scraped.sum("cellwire_edge_cell_request_errors_total")).toBe(1);
  });

  it("times its directory requests by operation and counts the failed ones", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    metrics.directoryRequests.requestEnded("directory.resolveUser", 4, false);
    metrics.directoryRequests.requestEnded("directory.listCells", 1000, true);
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_directory_request_seconds_count", { operation: "resolveUser" })).toBe(1);
    expect(scraped.sum("cellwire_edge_directory_request_seconds_count", { operation: "listCells" })).toBe(1);
    expect(scraped.sum("cellwire_edge_directory_request_errors_total", { operation: "listCells" })).toBe(1);
    expect(scraped.sum("cellwire_edge_directory_request_errors_total", { operation: "resolveUser" })).toBe(0);
    expect(scraped.types.get("cellwire_edge_directory_request_seconds")).toBe("histogram");
  });

  it("counts directory cache lookups: a miss, then a hit for the same key", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    const cache = createEdgeDirectoryCache(
      10,
      60_000,
      () => 0,
      (result) => metrics.directoryCacheLookup(result),
    );
    const entry = { kind: "user", id: "alice", cellId: "a", epoch: 1 } as const;
    await cache.get("user:alice", () => Promise.resolve(entry));
    await cache.get("user:alice", () => Promise.resolve(entry));
    const scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_directory_cache_lookups_total", { result: "miss" })).toBe(1);
    expect(scraped.sum("cellwire_edge_directory_cache_lookups_total", { result: "hit" })).toBe(1);
  });

  it("reads the NATS and directory gauges from their sources, 0 before the edge is wired", async () => {
    const metrics = new EdgeMetrics("cellwire-edge-test");
    let scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_nats_connected")).toBe(0);
    let natsUp = true;
    metrics.observe({
      sessions: () => ({ awaitingHello: 0, welcomed: 0, draining: 0 }),
      natsConnected: () => natsUp,
      directoryReachable: () => false,
    });
    scraped = await scrape(metrics);
    expect(scraped.sum("cellwire_edge_nats_connected")).toBe(1);
    expect(scraped.sum("cellwire_edge_directory_reachable")).toBe(0);
    natsUp = false;
    expect((await scrape(metrics)).sum("cellwire_edge_nats_connected")).toBe(0);
    // Every series carries the service and process labels of createServiceMetrics.
    expect(scraped.find("cellwire_edge_nats_connected")[0]?.labels).toEqual({ service: "edge", process: "cellwire-edge-test" });
  });
});

describe("edge readiness", () => {
  function checks(state: { nats: boolean; accepting: boolean; directory: boolean }) {
    return edgeReadinessChecks({
      natsConnected: () => state.nats,
      accepting: () => state.accepting,
      directoryReachable: () => state.directory,
    });
  }

  it("is ready with NATS up and sessions accepted, even with the directory down (which shows in the detail)", async () => {
    const report = await readinessReport(checks({ nats: true, accepting: true, directory: false }));
    expect(report.ready).toBe(true);
    expect(report.checks["directory"]).toMatchObject({ ok: false, decidesReadiness: false });
  });

  it("is not ready without NATS, nor while draining", async () => {
    expect((await readinessReport(checks({ nats: false, accepting: true, directory: true }))).ready).toBe(false);
    const draining = await readinessReport(checks({ nats: true, accepting: false, directory: true }));
    expect(draining.ready).toBe(false);
    expect(draining.checks["sessions"]).toMatchObject({ ok: false, decidesReadiness: true });
  });

  it("takes a core that drains (or closes all) as not accepting", async () => {
    const edge = fakeEdge();
    edges.push(edge);
    expect(edge.core.isAccepting).toBe(true);
    edge.core.closeAll();
    expect(edge.core.isAccepting).toBe(false);
  });

  it("answers from the directory's last probe without waiting, probing again in the background once it is stale", async () => {
    let nowMs = 0;
    let probes = 0;
    let answers = true;
    const probe = new DirectoryProbe(
      () => {
        probes++;
        return answers ? Promise.resolve() : Promise.reject(new Error("directory_unavailable"));
      },
      () => nowMs,
    );
    expect(probe.reachable()).toBe(false);
    expect(await probe.refresh()).toBe(true);
    expect(probes).toBe(1);
    answers = false;
    nowMs += directoryProbeIntervalMs - 1;
    expect(probe.reachable()).toBe(true);
    expect(probes).toBe(1);
    nowMs += 1;
    // Stale: still the last answer now, and one probe started (a second reader joins it).
    expect(probe.reachable()).toBe(true);
    expect(probe.reachable()).toBe(true);
    expect(probes).toBe(2);
    await probe.refresh();
    expect(probes).toBe(2);
    expect(probe.reachable()).toBe(false);
  });
});
