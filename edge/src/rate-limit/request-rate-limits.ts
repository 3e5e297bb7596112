// Rate limits on a session's requests (docs/protocol.md, "Rate limits"): a token bucket per session and
// one per user on this edge (shared by the user's sessions here) for each rate-limited kind of request,
// and a fan-out bucket per user charged with the recipients of each message the user sent. A request is
// let through only when every bucket it draws on holds a token; otherwise nothing is taken and the caller
// answers `rate_limited` with the wait as `retryAfterMs`, without doing any of the request.
//
// Memory: the buckets are made on a kind's first request and live on the session (SessionRateLimits) and
// on the user's record (UserRateLimits, referenced by each of the user's sessions here, freed with the
// last one). No map keyed by anything a client chooses.
import { retryAfterMsMax, type ClientRequestFrame } from "@cellwire/protocol";
import { assertTokenRate, TokenBucket, type TokenRate } from "./token-bucket.ts";

/** The kinds of request with their own buckets; other requests are bounded only by the in-flight limits. */
export const rateLimitedKinds = ["send", "typing", "history", "conversationChange", "refresh"] as const;
export type RateLimitedKind = (typeof rateLimitedKinds)[number];

export type RateLimitSettings = {
  /** Per kind: each session's bucket. */
  readonly perSession: Readonly<Record<RateLimitedKind, TokenRate>>;
  /** Per kind: the bucket of a user's sessions on one edge together. */
  readonly perUser: Readonly<Record<RateLimitedKind, TokenRate>>;
  /**
   * Recipients of a user's messages (the conversation's member count, the sender included), charged
   * after each message is stored; a send is refused while the user's fan-out bucket is in debt.
   */
  readonly fanOutPerUser: TokenRate;
};

export function assertRateLimitSettings(settings: RateLimitSettings): void {
  for (const kind of rateLimitedKinds) {
    assertTokenRate(settings.perSession[kind], `perSession.${kind}`);
    assertTokenRate(settings.perUser[kind], `perUser.${kind}`);
  }
  assertTokenRate(settings.fanOutPerUser, "fanOutPerUser");
}

/** The bucket kind a request frame draws on; undefined for requests without one (ping, read, …). */
export function rateLimitedKindOf(type: ClientRequestFrame["type"]): RateLimitedKind | undefined {
  switch (type) {
    case "send":
      return "send";
    case "typing":
      return "typing";
    case "history":
      return "history";
    // Each writes conversation and member rows and a joined event per new member, through the outbox.
    case "openDirect":
    case "createGroup":
    case "addMembers":
      return "conversationChange";
    // Each costs a signature check before anything else can refuse it.
    case "refresh":
      return "refresh";
    default:
      return undefined;
  }
}

const kindIndex: Readonly<Record<RateLimitedKind, number>> = { send: 0, typing: 1, history: 2, conversationChange: 3, refresh: 4 };

/** One bucket per kind, each made on its kind's first request. */
export class KindBuckets {
  private readonly buckets: (TokenBucket | undefined)[] = [undefined, undefined, undefined, undefined, undefined];

  constructor(private readonly rates: Readonly<Record<RateLimitedKind, TokenRate>>) {}

  of(kind: RateLimitedKind, nowMs: number): TokenBucket {
    const index = kindIndex[kind];
    let bucket = this.buckets[index];
    if (bucket === undefined) {
      bucket = new TokenBucket(this.rates[kind], nowMs);
      this.buckets[index] = bucket;
    }
    return bucket;
  }
}

/** A user's buckets on this edge, shared by every session of the user here. */
export class UserRateLimits {
  readonly buckets: KindBuckets;
  private fanOutBucket: TokenBucket | undefined;

  constructor(readonly settings: RateLimitSettings) {
    this.buckets = new KindBuckets(settings.perUser);
  }

  fanOut(nowMs: number): TokenBucket {
    return (this.fanOutBucket ??= new TokenBucket(this.settings.fanOutPerUser, nowMs));
  }
}

/** One session's buckets, with its user's. */
export class SessionRateLimits {
  private readonly buckets: KindBuckets;

  constructor(readonly user: UserRateLimits) {
    this.buckets = new KindBuckets(user.settings.perSession);
  }

  /**
   * 0, and counted, when a request of `kind` may go now; else the milliseconds until it may (at most
   * retryAfterMsMax), and nothing is counted, so a refused request does not push the next one back.
   */
  admit(kind: RateLimitedKind, nowMs: number): number {
    const own = this.buckets.of(kind, nowMs);
    const shared = this.user.buckets.of(kind, nowMs);
    let waitMs = Math.max(own.waitMs(1, nowMs), shared.waitMs(1, nowMs));
    if (kind === "send") waitMs = Math.max(waitMs, this.user.fanOut(nowMs).waitMs(0, nowMs));
    if (waitMs > 0) return Math.min(waitMs, retryAfterMsMax);
    own.take(1);
    shared.take(1);
    return 0;
  }

  /** A message the session's device sent reached `recipientCount` members: the user's fan-out pays. */
  chargeFanOut(recipientCount: number, nowMs: number): void {
    this.user.fanOut(nowMs).charge(recipientCount, nowMs);
  }
}
