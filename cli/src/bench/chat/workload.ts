// The chat benchmark's workload, pure: who is in which conversation, which load process and server each
// user uses, when each send is intended, what a message body carries, and how a rate is judged. The
// coordinator (main.ts) and the load processes (load-process.ts) both read it, so they agree on every
// number without telling each other more than a window's start.

/** The doubling grid: 25 × 2^k sends/s. */
export const rateGridBase = 25;
/** The grid stops at 25 × 2^10 = 25,600 sends/s, far past anything these two cores serve. */
export const rateGridStepsMax = 10;
/** A delivery later than this after its intended send is late, and a late delivery fails the rate. */
export const onTimeDeliveryUsMax = 5_000_000;
/** A rate passes only with p99 delivery at or under this. */
export const deliveryP99MsPassMax = 50;
/**
 * Message keys are processIndex × this + a per-process counter, so keys of different load processes never
 * meet; a process that sends more than this many messages in one run is refused (see nextMessageKey).
 */
export const messageKeyProcessStride = 1_000_000_000;
/** The body's header (`<key> <intendedUs> `) is at most this long, so a body never needs less room. */
export const messageBodyHeaderLengthMax = 11 + 1 + 17 + 1;
const bodyPadding = "x";

/** The grid's rates, lowest first. */
export function defaultRateGrid(): number[] {
  return Array.from({ length: rateGridStepsMax + 1 }, (_, step) => rateGridBase * 2 ** step);
}

export function userIdOf(runId: string, userIndex: number): string {
  return `${runId}-u${userIndex}`;
}

export type ConversationPlan = {
  /** The workload's number for it, unique in the run; also its position in the plan. */
  readonly index: number;
  /** User indexes, the creator first. */
  readonly memberUserIndexes: readonly number[];
};

/**
 * Users split into consecutive conversations of `groupSize` (0..n-1, n..2n-1, …); the users left over
 * at the end (fewer than a group) take no part.
 */
export function planConversations(userCount: number, groupSize: number): ConversationPlan[] {
  if (!Number.isSafeInteger(groupSize) || groupSize < 2) throw new RangeError(`a conversation needs at least 2 members, not ${groupSize}`);
  if (!Number.isSafeInteger(userCount) || userCount < groupSize)
    throw new RangeError(`${userCount} users cannot fill a conversation of ${groupSize}`);
  const count = Math.floor(userCount / groupSize);
  return Array.from({ length: count }, (_, index) => ({
    index,
    memberUserIndexes: Array.from({ length: groupSize }, (_, member) => index * groupSize + member),
  }));
}

/**
 * User i runs in load process i % processCount and connects to server i % serverCount: the members of a
 * 1:1 pair (2k, 2k+1) sit in different processes and on different servers whenever there are two or more.
 */
export function processOfUser(userIndex: number, processCount: number): number {
  return userIndex % processCount;
}

/** The server URLs in the order user `userIndex` tries them: its own server first, then the others in turn. */
export function serverUrlsOfUser(userIndex: number, serverUrls: readonly string[]): string[] {
  const first = userIndex % serverUrls.length;
  return [...serverUrls.slice(first), ...serverUrls.slice(0, first)];
}

/**
 * The order in which a load process's users take turns to send (round robin, each to its own
 * conversation): the first of its members in each conversation, conversation by conversation, then the
 * second, and so on. In user order, the members of one group would send back to back, and a short window
 * would load a few conversations (and their owners) while the rest stayed idle.
 */
export function senderOrder<T extends { readonly userIndex: number; readonly conversationIndex: number }>(senders: readonly T[]): T[] {
  const rankInConversation = new Map<T, number>();
  const seen = new Map<number, number>();
  for (const sender of [...senders].sort((left, right) => left.userIndex - right.userIndex)) {
    const rank = seen.get(sender.conversationIndex) ?? 0;
    seen.set(sender.conversationIndex, rank + 1);
    rankInConversation.set(sender, rank);
  }
  return [...senders].sort(
    (left, right) =>
      (rankInConversation.get(left) ?? 0) - (rankInConversation.get(right) ?? 0) || left.conversationIndex - right.conversationIndex,
  );
}

// ---------------------------------------------------------------------------------------------------
// The send schedule: constant arrival rate, latency from the intended time

export type WindowTiming = {
  /** Sends per second over all load processes. */
  readonly rate: number;
  /** Wall-clock microseconds (performance.timeOrigin + performance.now()) at which the warm-up starts. */
  readonly startUs: number;
  readonly warmupS: number;
  readonly durationS: number;
};

export type SendSchedule = {
  readonly firstUs: number;
  readonly intervalUs: number;
  /** Sends intended from here on are measured. */
  readonly measureStartUs: number;
  /** No send is intended at or after this. */
  readonly endUs: number;
  readonly sendCount: number;
};

/**
 * The sends of one load process in one window. The processes interleave: send k of process p is the
 * run's send k × processCount + p, intended at startUs + (k × processCount + p) / rate, so together they
 * arrive at exactly `rate` sends/s, evenly spaced, however many processes there are.
 */
export function sendSchedule(timing: WindowTiming, processIndex: number, processCount: number): SendSchedule {
  const globalIntervalUs = 1e6 / timing.rate;
  const firstUs = timing.startUs + processIndex * globalIntervalUs;
  const intervalUs = processCount * globalIntervalUs;
  const measureStartUs = Math.round(timing.startUs + timing.warmupS * 1e6);
  const endUs = Math.round(measureStartUs + timing.durationS * 1e6);
  const schedule = { firstUs, intervalUs, measureStartUs, endUs, sendCount: 0 };
  // The division can land a hair off a whole number: settle the count on the rounded times themselves.
  let sendCount = Math.max(0, Math.ceil((endUs - firstUs) / intervalUs));
  while (sendCount > 0 && intendedUs(schedule, sendCount - 1) >= endUs) sendCount--;
  while (intendedUs(schedule, sendCount) < endUs) sendCount++;
  return { ...schedule, sendCount };
}

/** When send k of the schedule is intended, in whole wall-clock microseconds. */
export function intendedUs(schedule: SendSchedule, sendIndex: number): number {
  return Math.round(schedule.firstUs + sendIndex * schedule.intervalUs);
}

/** Whether a message intended at `intended` counts in the window (its warm-up does not). */
export function isMeasured(schedule: Pick<SendSchedule, "measureStartUs" | "endUs">, intended: number): boolean {
  return intended >= schedule.measureStartUs && intended < schedule.endUs;
}

export function messageKey(processIndex: number, counter: number): number {
  if (counter >= messageKeyProcessStride)
    throw new RangeError(`load process ${processIndex} ran out of message keys after ${messageKeyProcessStride} sends`);
  return processIndex * messageKeyProcessStride + counter;
}

// ---------------------------------------------------------------------------------------------------
// Message bodies: `<key> <intendedUs> ` padded with "x" to the body size

/** The body of message `key` intended at `intended` µs: at least bodyBytes characters (ASCII, so bytes too). */
export function messageBody(key: number, intended: number, bodyBytes: number): string {
  return `${key} ${intended} `.padEnd(bodyBytes, bodyPadding);
}

export type BodyHeader = { readonly key: number; readonly intendedUs: number };

/**
 * The key and intended time of a body made by messageBody; undefined for anything else (a peer that
 * mangled a body shows as a missing message, not as a crash of the load process).
 */
export function parseMessageBody(body: string): BodyHeader | undefined {
  const keyEnd = body.indexOf(" ");
  if (keyEnd < 1) return undefined;
  const intendedEnd = body.indexOf(" ", keyEnd + 1);
  if (intendedEnd < keyEnd + 2) return undefined;
  const key = Number(body.slice(0, keyEnd));
  const intended = Number(body.slice(keyEnd + 1, intendedEnd));
  if (!Number.isSafeInteger(key) || key < 0 || !Number.isSafeInteger(intended) || intended < 0) return undefined;
  return { key, intendedUs: intended };
}

// ---------------------------------------------------------------------------------------------------
// Judging a rate, and the knee

/** What each load process counted of one window's messages, and the key tallies the coordinator merges. */
export type SentMessages = {
  /** The keys of the window's sends of one process. */
  readonly keys: Float64Array;
  /** The member count of each send's conversation, index for index. */
  readonly members: Uint32Array;
};

export type DeliveryTallies = {
  readonly keys: Float64Array;
  readonly onTime: Uint32Array;
  readonly late: Uint32Array;
};

export type DeliveryCount = {
  readonly expected: number;
  readonly onTime: number;
  readonly late: number;
  /** Deliveries each send still lacked (a message delivered to more connections than members never offsets another's loss). */
  readonly missing: number;
  /** Deliveries of keys no process sent in the window, or beyond a message's member count. */
  readonly unexpected: number;
};

/** Merges every process's sends and tallies: what was expected, what came, what is missing. */
export function countDeliveries(sent: readonly SentMessages[], tallies: readonly DeliveryTallies[]): DeliveryCount {
  const deliveredByKey = new Map<number, number>();
  let onTime = 0;
  let late = 0;
  for (const tally of tallies) {
    for (let index = 0; index < tally.keys.length; index++) {
      const key = tally.keys[index] ?? 0;
      const count = (tally.onTime[index] ?? 0) + (tally.late[index] ?? 0);
      onTime += tally.onTime[index] ?? 0;
      late += tally.late[index] ?? 0;
      deliveredByKey.set(key, (deliveredByKey.get(key) ?? 0) + count);
    }
  }
  let expected = 0;
  let missing = 0;
  let unexpected = 0;
  for (const messages of sent) {
    for (let index = 0; index < messages.keys.length; index++) {
      const key = messages.keys[index] ?? 0;
      const members = messages.members[index] ?? 0;
      const delivered = deliveredByKey.get(key) ?? 0;
      deliveredByKey.delete(key);
      expected += members;
      if (delivered < members) missing += members - delivered;
      else unexpected += delivered - members;
    }
  }
  for (const delivered of deliveredByKey.values()) unexpected += delivered;
  return { expected, onTime, late, missing, unexpected };
}

export type RateFigures = {
  readonly sent: number;
  readonly missing: number;
  readonly late: number;
  readonly deliveryP99Ms: number | undefined;
};

/** Every message reached every member within 5 s, and p99 delivery is at most 50 ms. Nothing sent is no pass. */
export function ratePasses(figures: RateFigures): boolean {
  return (
    figures.sent > 0 &&
    figures.missing === 0 &&
    figures.late === 0 &&
    figures.deliveryP99Ms !== undefined &&
    figures.deliveryP99Ms <= deliveryP99MsPassMax
  );
}

export type RateOutcome = { readonly rate: number; readonly pass: boolean };

export type Knee = {
  /** The highest passing rate below the first failing one (the highest passing rate when none failed). */
  readonly kneeRate: number | undefined;
  /** The first failing rate (on the grid, twice the knee); undefined when every rate passed. */
  readonly firstFailingRate: number | undefined;
};

/** Outcomes in the order they ran (ascending rates). */
export function findKnee(outcomes: readonly RateOutcome[]): Knee {
  const firstFailing = outcomes.find((outcome) => !outcome.pass);
  let kneeRate: number | undefined;
  for (const outcome of outcomes) {
    if (!outcome.pass) continue;
    if (firstFailing !== undefined && outcome.rate >= firstFailing.rate) continue;
    if (kneeRate === undefined || outcome.rate > kneeRate) kneeRate = outcome.rate;
  }
  return { kneeRate, firstFailingRate: firstFailing?.rate };
}

/**
 * Whether to run the next rate: the default grid stops after its first failing rate (unless keepGoing);
 * an explicit list of rates runs in full, since someone asked for each of them.
 */
export function continueAfter(outcome: RateOutcome, rules: { readonly explicitRates: boolean; readonly keepGoing: boolean }): boolean {
  return outcome.pass || rules.explicitRates || rules.keepGoing;
}
