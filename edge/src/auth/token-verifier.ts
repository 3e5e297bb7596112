// Verifies the token of a hello frame. Production reads keys from a JWKS (URL or file) and requires
// issuer, audience, exp and sub; dev mode trusts the local dev key pair. The signature and the claims are
// checked with node:crypto (jwt-verification.ts); jose only picks the key of a JWKS (by kid and alg) and
// fetches a remote one.
import { readFile } from "node:fs/promises";
import { createPublicKey, KeyObject, type JsonWebKey, type webcrypto } from "node:crypto";
import { createLocalJWKSet, createRemoteJWKSet, errors, type CompactJWSHeaderParameters, type JWTVerifyGetKey } from "jose";
import { isDeviceId, isUserId } from "@cellwire/protocol";
import type { EdgeAuthConfig } from "../config.ts";
import { devAudience, devIssuer, ensureDevKeyPair } from "./dev-keys.ts";
import { parseJwt, verifyParsedJwt, type JwtAlgorithm, type JwtFailure, type JwtRules, type ParsedJwt } from "./jwt-verification.ts";

export type Identity = {
  readonly userId: string;
  readonly deviceId: string | undefined;
  /**
   * When the edge stops accepting this token (ms since the epoch): its exp plus the clock tolerance. A
   * session opened with it is closed with 4101 then, unless a `refresh` moves it.
   */
  readonly expiresAtMs: number;
  /** The token's iat in ms since the epoch, when it has one (revocations refuse tokens issued before them). */
  readonly issuedAtMs: number | undefined;
};
export type VerifyOutcome =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly reason: "token_invalid" | "token_expired"; readonly detail: string };

export interface TokenVerifier {
  /** Never throws for a bad token: a bad token is an expected outcome. */
  verify(token: string): Promise<VerifyOutcome>;
}

/** One key (dev mode), or a JWKS that picks the key for each token's header. */
type KeySource = { readonly kind: "fixed"; readonly key: KeyObject } | { readonly kind: "set"; readonly keyFor: JWTVerifyGetKey };

/** Why the default tolerance is 30 s: NTP keeps servers within milliseconds, phones and laptops within seconds. */
export const clockToleranceMsDefault = 30_000;
/** The cooldown and cache age of a remote JWKS unless configured (jose's own defaults). */
export const jwksCooldownMsDefault = 30_000;
export const jwksCacheMaxAgeMsDefault = 600_000;

export type TokenVerifierOptions = {
  /** Skew allowed between the issuer's clock and the edge's on exp and nbf (EDGE_CLOCK_TOLERANCE_MS). */
  readonly clockToleranceMs?: number;
  /** Wall-clock ms since the epoch; injected by tests. */
  readonly wallNowMs?: () => number;
};

function identityOf(payload: Readonly<Record<string, unknown>>, clockToleranceMs: number): VerifyOutcome {
  const userId = payload.sub;
  if (typeof userId !== "string" || !isUserId(userId)) {
    return { ok: false, reason: "token_invalid", detail: "sub must be a user id of 1-64 characters [A-Za-z0-9_-]" };
  }
  const claimedDevice = payload["device_id"];
  if (claimedDevice !== undefined && (typeof claimedDevice !== "string" || !isDeviceId(claimedDevice))) {
    return { ok: false, reason: "token_invalid", detail: "device_id must be a device id of 1-64 characters [A-Za-z0-9_-]" };
  }
  // checkClaims required exp and checked that exp and iat, when present, are numbers.
  const expiresAt = payload["exp"];
  const issuedAt = payload["iat"];
  return {
    ok: true,
    identity: {
      userId,
      deviceId: claimedDevice,
      expiresAtMs: typeof expiresAt === "number" ? expiresAt * 1000 + clockToleranceMs : 0,
      issuedAtMs: typeof issuedAt === "number" ? issuedAt * 1000 : undefined,
    },
  };
}

function failed(failure: JwtFailure): VerifyOutcome {
  return { ok: false, reason: failure.reason, detail: failure.detail };
}

class JwtTokenVerifier implements TokenVerifier {
  /** The KeyObject of each CryptoKey a JWKS handed out (jose keeps one per key, so this stays small). */
  private readonly keyObjects = new WeakMap<object, KeyObject>();

  constructor(
    private readonly keys: KeySource,
    private readonly rules: JwtRules,
    private readonly wallNowMs: () => number,
  ) {}

  verify(token: string): Promise<VerifyOutcome> {
    const parsed = parseJwt(token, this.rules.algorithms);
    if (!parsed.ok) return Promise.resolve(failed(parsed));
    if (this.keys.kind === "fixed") return Promise.resolve(this.check(parsed, this.keys.key));
    return this.verifyWithSet(parsed, this.keys.keyFor, token);
  }

  private check(parsed: ParsedJwt, key: KeyObject): VerifyOutcome {
    const verified = verifyParsedJwt(parsed, key, this.rules, this.wallNowMs() / 1000);
    return verified.ok ? identityOf(verified.claims, this.rules.clockToleranceSeconds * 1000) : failed(verified);
  }

  private async verifyWithSet(parsed: ParsedJwt, keyFor: JWTVerifyGetKey, token: string): Promise<VerifyOutcome> {
    let key: KeyObject;
    try {
      const [protectedSegment = "", payload = "", signature = ""] = token.split(".");
      const { alg, kid } = parsed.header;
      const header: CompactJWSHeaderParameters = kid === undefined ? { alg } : { alg, kid };
      const found: unknown = await keyFor(header, { protected: protectedSegment, payload, signature });
      key = this.keyObjectOf(found);
    } catch (error) {
      if (error instanceof errors.JOSEError) return { ok: false, reason: "token_invalid", detail: error.code };
      return { ok: false, reason: "token_invalid", detail: "unverifiable token" };
    }
    return this.check(parsed, key);
  }

  private keyObjectOf(found: unknown): KeyObject {
    if (found instanceof KeyObject) return found;
    if (typeof found !== "object" || found === null || found instanceof Uint8Array) throw new TypeError("the JWKS gave no public key");
    let keyObject = this.keyObjects.get(found);
    if (keyObject === undefined) {
      // jose hands out WebCrypto keys; node:crypto verifies with the KeyObject of the same key.
      keyObject = KeyObject.from(found as webcrypto.CryptoKey);
      this.keyObjects.set(found, keyObject);
    }
    return keyObject;
  }
}

/** The algorithms a production JWKS may use. */
const jwksAlgorithms: readonly JwtAlgorithm[] = ["RS256", "ES256", "EdDSA", "PS256", "ES384", "RS512"];

export async function createTokenVerifier(auth: EdgeAuthConfig, options: TokenVerifierOptions = {}): Promise<TokenVerifier> {
  const clockToleranceSeconds = (options.clockToleranceMs ?? clockToleranceMsDefault) / 1000;
  const wallNowMs = options.wallNowMs ?? Date.now;
  if (auth.mode === "dev") {
    const { publicJwk } = await ensureDevKeyPair(auth.devKeyDirectory);
    const jwk: JsonWebKey = { ...publicJwk };
    const key = createPublicKey({ key: jwk, format: "jwk" });
    return new JwtTokenVerifier(
      { kind: "fixed", key },
      { issuer: devIssuer, audience: devAudience, algorithms: ["ES256"], clockToleranceSeconds },
      wallNowMs,
    );
  }
  const rules: JwtRules = { issuer: auth.issuer, audience: auth.audience, algorithms: jwksAlgorithms, clockToleranceSeconds };
  if (auth.jwksUrl !== undefined) {
    // jose caches the set for cacheMaxAge and refetches it for a kid it does not hold (a rotation), but at
    // most once per cooldown: a flood of tokens with unknown kids costs one fetch per cooldown, and the
    // rest fail as ERR_JWKS_NO_MATCHING_KEY (token_invalid) without a request. Concurrent refetches share
    // one request. The config refuses a URL that is not https (loopback aside), so keys come over TLS.
    const keyFor = createRemoteJWKSet(new URL(auth.jwksUrl), {
      cooldownDuration: auth.jwksCooldownMs ?? jwksCooldownMsDefault,
      cacheMaxAge: auth.jwksCacheMaxAgeMs ?? jwksCacheMaxAgeMsDefault,
    });
    return new JwtTokenVerifier({ kind: "set", keyFor }, rules, wallNowMs);
  }
  if (auth.jwksFile === undefined) throw new Error("jwks mode needs a JWKS URL or file");
  const parsed: unknown = JSON.parse(await readFile(auth.jwksFile, "utf8"));
  if (typeof parsed !== "object" || parsed === null || !Array.isArray((parsed as { keys?: unknown }).keys)) {
    throw new Error(`${auth.jwksFile} is not a JWKS ({"keys": [...]})`);
  }
  return new JwtTokenVerifier(
    { kind: "set", keyFor: createLocalJWKSet(parsed as Parameters<typeof createLocalJWKSet>[0]) },
    rules,
    wallNowMs,
  );
}
