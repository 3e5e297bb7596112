// The edge's Prometheus metrics (edge/README.md, "Metrics and health"). Every label value comes from a
// closed set the protocol module names (frame types, error and close codes, upgrade refusals, cell request
// kinds): a client's own string never becomes a label, since each new value is a new series held forever.
//
// The message path pays one property increment per counted thing: counters are PlainCounters and
// histograms PlainHistograms (cluster), one cell per label value bound at construction, read when scraped
// (prom-client's own inc() and observe() hash the labels on every call: ~3 µs an observation).
import {
  clientLatencyBucketsSeconds,
  createCellRequestMetrics,
  createDirectoryRequestMetrics,
  createServiceMetrics,
  Gauge,
  PlainCounter,
  PlainHistogram,
  type CellRequestObserver,
  type CounterCell,
  type DirectoryCacheLookup,
  type DirectoryRequestObserver,
  type Registry,
  type ServiceMetrics,
} from "@cellwire/cluster";
import {
  closeCodes,
  errorCodeList,
  standardCloseCodes,
  upgradeRefusalList,
  type ClientFrame,
  type ErrorCode,
  type ServerFrame,
  type UpgradeRefusal,
  serverFrameTypeList,
} from "@cellwire/protocol";

/** A client frame's type, or "unknown" for one that does not decode (never the client's own string). */
export type ReceivedFrameType = ClientFrame["type"] | "unknown";
export type SentFrameType = ServerFrame["type"];
/** How a send was answered: acked (stored), or refused with a retryable or a final error code. */
export type SendAnswer = "stored" | "retryable" | "final";

/** What the sessions report as they work. EdgeCore calls it; noSessionMetrics for tests that do not count. */
export interface SessionMetrics {
  /** A socket was handed to the core (before any limit refused it). */
  connectionOpened(): void;
  frameReceived(type: ReceivedFrameType): void;
  frameSent(type: SentFrameType): void;
  /** An error frame was written; frameSent("error") is reported too. */
  errorSent(code: ErrorCode): void;
  /** A send was taken into service (past the per-session, edge and rate limits). */
  sendStarted(): void;
  /** The reply of a send taken into service was written, `elapsedMs` after its frame was received. */
  sendAnswered(answer: SendAnswer, elapsedMs: number): void;
  /** A live message was written to a recipient session, `latencyMs` after its cell stored it (its sentAtMs). */
  messageDelivered(latencyMs: number): void;
}

export const noSessionMetrics: SessionMetrics = {
  connectionOpened: () => {},
  frameReceived: () => {},
  frameSent: () => {},
  errorSent: () => {},
  sendStarted: () => {},
  sendAnswered: () => {},
  messageDelivered: () => {},
};

/** What the uWS server reports: the door and the sockets' ends. */
export interface ServerMetrics {
  upgradeRefused(refusal: UpgradeRefusal): void;
  /** A socket closed, by either side, with `code` (a code outside the known set is counted as "other"). */
  socketClosed(code: number): void;
}

export const noServerMetrics: ServerMetrics = { upgradeRefused: () => {}, socketClosed: () => {} };

/** The sessions by state, read at each scrape. */
export type SessionCounts = { readonly awaitingHello: number; readonly welcomed: number; readonly draining: number };

/** What the gauges read at each scrape; set once the edge's parts exist (EdgeMetrics.observe). */
export type EdgeGaugeSources = {
  readonly sessions: () => SessionCounts;
  readonly natsConnected: () => boolean;
  /** The directory answered its last probe (DirectoryProbe: never waits). */
  readonly directoryReachable: () => boolean;
};

const receivedFrameTypes = [
  "hello",
  "send",
  "openDirect",
  "createGroup",
  "addMembers",
  "history",
  "ping",
  "typing",
  "watchPresence",
  "read",
  "delivered",
  "refresh",
  "unknown",
] as const satisfies readonly ReceivedFrameType[];

const sentFrameTypes = serverFrameTypeList;

// Compile-time proof that the lists above name every type: adding a frame type to the protocol without
// adding it here fails the build instead of counting it nowhere.
type Missing<All extends string, Listed extends readonly string[]> = Exclude<All, Listed[number]>;
const everyReceivedType: Missing<ReceivedFrameType, typeof receivedFrameTypes> extends never ? true : never = true;
const everySentType: Missing<SentFrameType, typeof sentFrameTypes> extends never ? true : never = true;
void [everyReceivedType, everySentType];

/** The close codes counted by their number; any other (a client may close with any 3000–4999) is "other". */
const knownCloseCodes: readonly number[] = [...Object.values(closeCodes).map((close) => close.code), ...Object.values(standardCloseCodes)];

/** A PlainCounter (cluster) whose cells, one per value of its label's closed set, are bound now: every value shows from the first scrape. */
class CountedCounter<Value extends string> {
  readonly cells: Record<Value, CounterCell>;

  constructor(registry: Registry, name: string, help: string, labelName: string, values: readonly Value[]) {
    const counter = new PlainCounter({ name, help, registry, labelNames: [labelName] });
    const cells = {} as Record<Value, CounterCell>;
    for (const value of values) cells[value] = counter.cell(value);
    this.cells = cells;
  }
}

type HistogramChild = { observe(value: number): void };

export class EdgeMetrics implements SessionMetrics, ServerMetrics {
  readonly service: ServiceMetrics;
  private readonly connectionsOpened: CounterCell;
  private readonly framesReceived: CountedCounter<ReceivedFrameType>;
  private readonly framesSent: CountedCounter<SentFrameType>;
  private readonly errorsSent: CountedCounter<ErrorCode>;
  private readonly closes: CountedCounter<string>;
  private readonly closeCells: Map<number, CounterCell>;
  private readonly otherCloses: CounterCell;
  private readonly upgradesRefused: CountedCounter<UpgradeRefusal>;
  private readonly sends: CounterCell;
  private readonly acks: CountedCounter<SendAnswer>;
  private readonly sendAckSeconds: HistogramChild;
  private readonly sendDeliverySeconds: HistogramChild;
  /** The edge's requests to cells, timed by timedCellRequests (cluster) around its router. */
  readonly cellRequests: CellRequestObserver;
  /** The edge's directory requests, told by its DirectoryClient. */
  readonly directoryRequests: DirectoryRequestObserver;
  private readonly directoryLookups: CountedCounter<DirectoryCacheLookup>;
  private sources: EdgeGaugeSources | undefined;

  constructor(processName: string) {
    this.service = createServiceMetrics("edge", processName);
    const registry = this.service.registry;
    const name = (suffix: string): string => `cellwire_edge_${suffix}`;
    this.connectionsOpened = new PlainCounter({
      name: name("connections_opened_total"),
      help: "WebSocket connections opened (upgraded).",
      registry,
    }).cell();
    this.framesReceived = new CountedCounter(
      registry,
      name("frames_received_total"),
      "Client frames received, by type; a frame that does not decode counts as unknown.",
      "type",
      receivedFrameTypes,
    );
    this.framesSent = new CountedCounter(
      registry,
      name("frames_sent_total"),
      "Frames written to clients, by type.",
      "type",
      sentFrameTypes,
    );
    this.errorsSent = new CountedCounter(
      registry,
      name("errors_sent_total"),
      "Error frames written to clients, by code.",
      "code",
      errorCodeList,
    );
    const closeLabels = [...knownCloseCodes.map(String), "other"];
    this.closes = new CountedCounter(registry, name("closes_total"), "WebSocket closes (either side), by close code.", "code", closeLabels);
    this.closeCells = new Map(knownCloseCodes.map((code) => [code, this.closes.cells[String(code)] as CounterCell]));
    this.otherCloses = this.closes.cells["other"] as CounterCell;
    this.upgradesRefused = new CountedCounter(
      registry,
      name("upgrades_refused_total"),
      "WebSocket upgrades refused at admission, by reason.",
      "reason",
      upgradeRefusalList,
    );
    this.sends = new PlainCounter({
      name: name("sends_total"),
      help: "Sends taken into service (past the session, edge and rate limits).",
      registry,
    }).cell();
    this.acks = new CountedCounter(
      registry,
      name("acks_total"),
      "Answers to the sends taken into service: stored (ack), or an error retryable or final.",
      "outcome",
      ["stored", "retryable", "final"],
    );
    const latencies = latencyHistograms(registry);
    this.sendAckSeconds = latencies.sendAckSeconds;
    this.sendDeliverySeconds = latencies.sendDeliverySeconds;
    this.cellRequests = createCellRequestMetrics(registry, {
      durationName: name("cell_request_seconds"),
      durationHelp: "The edge's requests to cells over NATS (retries and moves included), by kind.",
      errorsName: name("cell_request_errors_total"),
      errorsHelp: "The edge's requests to cells that failed, by kind and error code.",
    });
    this.directoryRequests = createDirectoryRequestMetrics(registry, "edge");
    this.directoryLookups = new CountedCounter(
      registry,
      name("directory_cache_lookups_total"),
      "Lookups in the edge's directory cache, by result (a miss asks the directory or joins a request in flight).",
      "result",
      ["hit", "miss"],
    );
    registerGauges(registry, () => this.sources);
  }

  /** The gauges read these from now on (before, they read 0). */
  observe(sources: EdgeGaugeSources): void {
    this.sources = sources;
  }

  connectionOpened(): void {
    this.connectionsOpened.value++;
  }

  frameReceived(type: ReceivedFrameType): void {
    this.framesReceived.cells[type].value++;
  }

  frameSent(type: SentFrameType): void {
    this.framesSent.cells[type].value++;
  }

  errorSent(code: ErrorCode): void {
    this.errorsSent.cells[code].value++;
  }

  sendStarted(): void {
    this.sends.value++;
  }

  sendAnswered(answer: SendAnswer, elapsedMs: number): void {
    this.acks.cells[answer].value++;
    if (answer === "stored") this.sendAckSeconds.observe(elapsedMs / 1000);
  }

  messageDelivered(latencyMs: number): void {
    // Clocks of two hosts: a cell's a little ahead of this edge's reads as 0, not as a negative latency.
    this.sendDeliverySeconds.observe(latencyMs > 0 ? latencyMs / 1000 : 0);
  }

  upgradeRefused(refusal: UpgradeRefusal): void {
    this.upgradesRefused.cells[refusal].value++;
  }

  socketClosed(code: number): void {
    (this.closeCells.get(code) ?? this.otherCloses).value++;
  }

  directoryCacheLookup(result: DirectoryCacheLookup): void {
    this.directoryLookups.cells[result].value++;
  }

  scrape(): Promise<string> {
    return this.service.scrape();
  }

  get contentType(): string {
    return this.service.contentType;
  }
}

/** The latency histograms, one child per label value bound now. */
function latencyHistograms(registry: Registry): {
  sendAckSeconds: HistogramChild;
  sendDeliverySeconds: HistogramChild;
} {
  const sendAckSeconds = new PlainHistogram({
    name: "cellwire_edge_send_ack_seconds",
    help: "From a send frame's arrival at the edge to its ack being written.",
    buckets: clientLatencyBucketsSeconds,
    registry,
  }).cell();
  const sendDeliverySeconds = new PlainHistogram({
    name: "cellwire_edge_send_delivery_seconds",
    help: "From a message's commit in its cell (its sentAtMs, the cell's wall clock) to its frame being written to a recipient session here.",
    buckets: clientLatencyBucketsSeconds,
    registry,
  }).cell();
  return { sendAckSeconds, sendDeliverySeconds };
}

/** The gauges, read from `sources` at each scrape (0 until the edge is wired). */
function registerGauges(registry: Registry, sources: () => EdgeGaugeSources | undefined): void {
  new Gauge<"state">({
    name: "cellwire_edge_sessions",
    help: "Sessions on this edge, by state: awaiting_hello (not yet welcomed), welcomed, draining (welcomed, on a draining edge).",
    labelNames: ["state"],
    registers: [registry],
    collect() {
      const counts = sources()?.sessions() ?? { awaitingHello: 0, welcomed: 0, draining: 0 };
      this.labels("awaiting_hello").set(counts.awaitingHello);
      this.labels("welcomed").set(counts.welcomed);
      this.labels("draining").set(counts.draining);
    },
  });
  new Gauge({
    name: "cellwire_edge_nats_connected",
    help: "1 while the edge's NATS connection is up, else 0.",
    registers: [registry],
    collect() {
      this.set(sources()?.natsConnected() === true ? 1 : 0);
    },
  });
  new Gauge({
    name: "cellwire_edge_directory_reachable",
    help: "1 when the directory answered the edge's last probe, else 0 (cached users keep chatting without it).",
    registers: [registry],
    collect() {
      this.set(sources()?.directoryReachable() === true ? 1 : 0);
    },
  });
}
