// One rate's figures, merged from every load process's window report and the processes' CPU and memory:
// the JSON line the benchmark prints per (system, rate), and the knee line per system. Shapes here are the
// benchmark's output format; report.ts renders the same figures as markdown.
import { decodeHistogram, mergeHistograms, summariseMs, type LatencySummaryMs } from "./latency-histogram.ts";
import type { SystemName, WindowReport } from "./load-messages.ts";
import type { ProcessUsage } from "./process-usage.ts";
import type { ServiceBudget } from "./service-counters.ts";
import { countDeliveries, findKnee, ratePasses } from "./workload.ts";

export type ProcessFigures = {
  readonly name: string;
  readonly cpuMs: number;
  /** CPU microseconds per acked message; null when nothing was acked. */
  readonly cpuUsPerMessage: number | null;
  /** Voluntary context switches (wake-ups) of the process's threads per acked message; null when nothing was acked. */
  readonly wakeUpsPerMessage: number | null;
  /** Involuntary context switches (preemptions) per acked message; null when nothing was acked. */
  readonly preemptionsPerMessage: number | null;
  readonly rssMb: number;
};

export type RateResult = {
  readonly system: SystemName;
  readonly group: number;
  readonly rate: number;
  readonly durationS: number;
  readonly sent: number;
  readonly acked: number;
  readonly failed: number;
  /** Window sends neither acked nor failed when the window was reported (still waiting on the server). */
  readonly unanswered: number;
  readonly expectedDeliveries: number;
  /** Window deliveries received, each connection's first copy of each message (on time or late). */
  readonly delivered: number;
  readonly late: number;
  readonly missing: number;
  readonly duplicates: number;
  /** Deliveries beyond a message's member count: a message reaching a non-member shows here. */
  readonly unexpectedDeliveries: number;
  readonly connectionsLost: number;
  readonly ackedPerS: number;
  readonly deliveriesPerS: number;
  readonly ackMs: LatencySummaryMs | null;
  readonly deliveryMs: LatencySummaryMs | null;
  /** How late the load generator issued the sends after their intended times (in both latencies above). */
  readonly issueLatenessMs: LatencySummaryMs | null;
  readonly pass: boolean;
  readonly processes: readonly ProcessFigures[];
  /** CPU µs per acked message over the system's processes and the services it uses (not the load generator). */
  readonly serverCpuUsPerMessage: number | null;
  /** Wake-ups per acked message over the same processes and services. */
  readonly serverWakeUpsPerMessage: number | null;
  /** Every process of the machine over the window: more than the processes above means something else ran too. */
  readonly machineCpuMs: number | null;
  readonly firstError: string | null;
  /** What each acked message cost Postgres and NATS (service-counters.ts); Cellwire only. */
  readonly budget?: ServiceBudget | null;
};

export type KneeLine = {
  readonly system: SystemName;
  readonly group: number;
  readonly kneeSendsPerS: number | null;
  readonly kneeDeliveriesPerS: number | null;
  /** The first failing rate (on the doubling grid, twice the knee) and what was acked there. */
  readonly atTwiceKnee: { readonly rate: number; readonly ackedPerS: number } | null;
};

export type RatioLine = {
  readonly ratio: "cellwire/socketio";
  readonly group: number;
  readonly kneeSends: number | null;
  readonly kneeDeliveries: number | null;
};

/** Processes that generate the load rather than serve it. */
export function isLoadGenerator(name: string): boolean {
  return name.startsWith("load-") || name === "bench-coordinator";
}

function perSecond(count: number, durationS: number): number {
  return Math.round((count / durationS) * 10) / 10;
}

function perMessage(cpuMs: number, acked: number): number | null {
  return acked === 0 ? null : Math.round((cpuMs * 1000) / acked);
}

/** Context switches per acked message, to two decimals: a batch of many messages shares one. */
function switchesPerMessage(switches: number, acked: number): number | null {
  return acked === 0 ? null : Math.round((switches / acked) * 100) / 100;
}

export type RateInput = {
  readonly system: SystemName;
  readonly group: number;
  readonly rate: number;
  readonly durationS: number;
  readonly reports: readonly WindowReport[];
  readonly usage: readonly ProcessUsage[];
  readonly machineCpuMs: number | null;
};

export function mergeRate(input: RateInput): RateResult {
  const { reports } = input;
  const sum = (field: "sent" | "acked" | "failed" | "duplicates" | "connectionsLost"): number =>
    reports.reduce((total, report) => total + report[field], 0);
  const acked = sum("acked");
  const deliveries = countDeliveries(
    reports.map((report) => ({ keys: report.sentKeys, members: report.sentMembers })),
    reports.map((report) => ({ keys: report.deliveredKeys, onTime: report.onTime, late: report.late })),
  );
  const summary = (field: "ackHistogram" | "deliveryHistogram" | "issueLatenessHistogram"): LatencySummaryMs | null =>
    summariseMs(mergeHistograms(reports.map((report) => decodeHistogram(report[field])))) ?? null;
  const ackMs = summary("ackHistogram");
  const deliveryMs = summary("deliveryHistogram");
  const issueLatenessMs = summary("issueLatenessHistogram");
  const sent = sum("sent");
  const delivered = deliveries.onTime + deliveries.late;
  const processes = input.usage.map((usage) => ({
    name: usage.name,
    cpuMs: Math.round(usage.cpuMs),
    cpuUsPerMessage: perMessage(usage.cpuMs, acked),
    wakeUpsPerMessage: switchesPerMessage(usage.wakeUps, acked),
    preemptionsPerMessage: switchesPerMessage(usage.preemptions, acked),
    rssMb: usage.rssMb,
  }));
  const server = input.usage.filter((usage) => !isLoadGenerator(usage.name));
  const serverCpuMs = server.reduce((total, usage) => total + usage.cpuMs, 0);
  const serverWakeUps = server.reduce((total, usage) => total + usage.wakeUps, 0);
  return {
    system: input.system,
    group: input.group,
    rate: input.rate,
    durationS: input.durationS,
    sent,
    acked,
    failed: sum("failed"),
    unanswered: sent - acked - sum("failed"),
    expectedDeliveries: deliveries.expected,
    delivered,
    late: deliveries.late,
    missing: deliveries.missing,
    duplicates: sum("duplicates"),
    unexpectedDeliveries: deliveries.unexpected,
    connectionsLost: sum("connectionsLost"),
    ackedPerS: perSecond(acked, input.durationS),
    deliveriesPerS: perSecond(delivered, input.durationS),
    ackMs,
    deliveryMs,
    issueLatenessMs,
    pass: ratePasses({ sent, missing: deliveries.missing, late: deliveries.late, deliveryP99Ms: deliveryMs?.p99 }),
    processes,
    serverCpuUsPerMessage: perMessage(serverCpuMs, acked),
    serverWakeUpsPerMessage: switchesPerMessage(serverWakeUps, acked),
    machineCpuMs: input.machineCpuMs === null ? null : Math.round(input.machineCpuMs),
    firstError: reports.find((report) => report.firstError !== null)?.firstError ?? null,
  };
}

export function kneeLine(system: SystemName, group: number, results: readonly RateResult[]): KneeLine {
  const { kneeRate, firstFailingRate } = findKnee(results);
  const atKnee = results.find((result) => result.rate === kneeRate);
  const atFirstFailure = results.find((result) => result.rate === firstFailingRate);
  return {
    system,
    group,
    kneeSendsPerS: kneeRate ?? null,
    kneeDeliveriesPerS: atKnee?.deliveriesPerS ?? null,
    atTwiceKnee: atFirstFailure === undefined ? null : { rate: atFirstFailure.rate, ackedPerS: atFirstFailure.ackedPerS },
  };
}

function ratio(numerator: number | null, denominator: number | null): number | null {
  if (numerator === null || denominator === null || denominator === 0) return null;
  return Math.round((numerator / denominator) * 100) / 100;
}

export function ratioLine(cellwire: KneeLine, peer: KneeLine): RatioLine {
  return {
    ratio: "cellwire/socketio",
    group: cellwire.group,
    kneeSends: ratio(cellwire.kneeSendsPerS, peer.kneeSendsPerS),
    kneeDeliveries: ratio(cellwire.kneeDeliveriesPerS, peer.kneeDeliveriesPerS),
  };
}
