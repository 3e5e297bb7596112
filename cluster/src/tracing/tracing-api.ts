// What Cellwire's code sees of tracing: the Tracing interface that otel-tracing.ts implements and
// tracing.ts installs. Its own file, imported by both, so that the facade (tracing.ts), which loads the
// implementation lazily, and the implementation do not import each other.
import type { Attributes, Span, SpanContext } from "@opentelemetry/api";
import type { MsgHdrs } from "@nats-io/transport-node";

/** A span's identity, as carried between processes and named in links. */
export type TraceContext = SpanContext;
export type TraceSpan = Span;

export interface Tracing {
  /**
   * Runs `work` in a new span, a child of the active span if there is one, made the active span for
   * `work` (and everything it awaits). The span ends when `work` settles; `failure` names the result's
   * error, if it is one (its code or type), for the span's status.
   */
  inSpan<T>(name: string, attributes: Attributes, work: () => Promise<T>, failure?: (result: T) => string | undefined): Promise<T>;
  /** inSpan for a request from another process: the span is a child of `parent` (a root when absent). */
  inSpanOf<T>(
    name: string,
    attributes: Attributes,
    parent: TraceContext | undefined,
    work: () => Promise<T>,
    failure?: (result: T) => string | undefined,
  ): Promise<T>;
  /**
   * inSpan for work done in a batch for many requests (a relay of outbox rows): a root span linked to
   * each of `links` (the absent skipped), active for `work`, never the child of whichever request ran it.
   */
  inLinkedSpan<T>(name: string, attributes: Attributes, links: readonly (TraceContext | undefined)[], work: () => Promise<T>): Promise<T>;
  /** The context of the active span (set by inSpan), if any. */
  activeContext(): TraceContext | undefined;
  /**
   * Starts a span: a child of `parent` (a context from another process) if given, else a root; linked to
   * each of `links` (a batch's items), the absent skipped.
   */
  startSpan(name: string, attributes: Attributes, parent?: TraceContext, links?: readonly (TraceContext | undefined)[]): TraceSpan;
  /** A span that started at `startTimeMs` (from now()) and ends now. */
  recordSpan(name: string, attributes: Attributes, startTimeMs: number, links: readonly TraceContext[]): void;
  /** Ends `span`; `failure` (an error code) marks it as an error. */
  endSpan(span: TraceSpan, failure?: string): void;
  contextOf(span: TraceSpan): TraceContext;
  /** Milliseconds since the epoch, with a fraction: the clock of span times. */
  now(): number;
  /** Headers carrying one context (a request). */
  headersFor(context: TraceContext): MsgHdrs;
  /** Headers carrying one context per item of a batch, in item order; undefined when no item has one. */
  headersForEach(contexts: readonly (TraceContext | undefined)[]): MsgHdrs | undefined;
  /** The context a request carries, if any. */
  extract(headers: MsgHdrs | undefined): TraceContext | undefined;
  /** The context of item `index` of a batch, if it has one. */
  extractItem(headers: MsgHdrs | undefined, index: number): TraceContext | undefined;
  /** The context of each of a batch's `count` items, undefined where an item has none. */
  extractEach(headers: MsgHdrs | undefined, count: number): (TraceContext | undefined)[];
  /** Exports the spans still buffered and stops. */
  shutdown(): Promise<void>;
}
