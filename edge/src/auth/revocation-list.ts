// The revocations an edge remembers: user → when their sessions were revoked. While a revocation is
// retained, the user's tokens issued at or before it (by `iat`, or any token without `iat`) are refused,
// so a revoked client cannot come straight back with the token it held. Pure: the caller passes the
// wall clock in.
//
// Bounded twice: at most `revocationsMax` users (past it the oldest revocation is forgotten, and the
// caller is told so it can log it), and each for `retentionMs` (then the user's old tokens are accepted
// again, unless expired: an operator sets the retention to the longest token lifetime the issuer hands
// out). Memory: about 100 bytes per retained user.

export type RevocationListOptions = { readonly revocationsMax: number; readonly retentionMs: number };

export class RevocationList {
  /** Insertion order is revocation order: a repeated revocation is moved to the end. */
  private readonly revokedAtMsByUser = new Map<string, number>();

  constructor(private readonly options: RevocationListOptions) {}

  get size(): number {
    return this.revokedAtMsByUser.size;
  }

  /**
   * Remembers that `userId`'s sessions were revoked at `revokedAtMs`. Returns the user whose revocation was
   * forgotten to make room, if any. An older revocation than the one held changes nothing.
   */
  revoke(userId: string, revokedAtMs: number, nowMs: number): string | undefined {
    this.forgetExpired(nowMs);
    const held = this.revokedAtMsByUser.get(userId);
    if (held !== undefined && held >= revokedAtMs) return undefined;
    this.revokedAtMsByUser.delete(userId);
    this.revokedAtMsByUser.set(userId, revokedAtMs);
    if (this.revokedAtMsByUser.size <= this.options.revocationsMax) return undefined;
    const oldest = this.revokedAtMsByUser.keys().next();
    if (oldest.done === true) return undefined;
    this.revokedAtMsByUser.delete(oldest.value);
    return oldest.value;
  }

  /** Whether a token of `userId` issued at `issuedAtMs` (undefined: no iat) is refused at `nowMs`. */
  refuses(userId: string, issuedAtMs: number | undefined, nowMs: number): boolean {
    const revokedAtMs = this.revokedAtMsByUser.get(userId);
    if (revokedAtMs === undefined) return false;
    if (revokedAtMs + this.options.retentionMs <= nowMs) {
      this.revokedAtMsByUser.delete(userId);
      return false;
    }
    // iat has whole seconds: a token issued in the same second as the revocation is refused too, and the
    // client's next token (its provider is asked again after backoff) is accepted.
    return issuedAtMs === undefined || issuedAtMs <= revokedAtMs;
  }

  private forgetExpired(nowMs: number): void {
    for (const [userId, revokedAtMs] of this.revokedAtMsByUser) {
      // Not strictly ordered by revokedAtMs (revocations carry the operator's clock), so this may stop
      // early; `refuses` drops expired entries it meets, and the count bound holds regardless.
      if (revokedAtMs + this.options.retentionMs > nowMs) return;
      this.revokedAtMsByUser.delete(userId);
    }
  }
}
