// Verifies the token of a hello frame. Production reads keys from a JWKS (URL or file) and requires
// issuer, audience, exp and sub; dev mode trusts the local dev key pair.
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, createRemoteJWKSet, errors, importJWK, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type CryptoKey } from "jose";
import { isDeviceId, isUserId } from "@cellwire/protocol";
import type { EdgeAuthConfig } from "../config.ts";
import { devAudience, devIssuer, ensureDevKeyPair } from "./dev-keys.ts";

export type Identity = { readonly userId: string; readonly deviceId: string | undefined };
export type VerifyOutcome = { readonly ok: true; readonly identity: Identity } | { readonly ok: false; readonly reason: "token_invalid" | "token_expired"; readonly detail: string };

export interface TokenVerifier {
  /** Never throws for a bad token: a bad token is an expected outcome. */
  verify(token: string): Promise<VerifyOutcome>;
}

type KeySource = CryptoKey | JWTVerifyGetKey;

function identityOf(payload: JWTPayload): VerifyOutcome {
  const userId = payload.sub;
  if (typeof userId !== "string" || !isUserId(userId)) {
    return { ok: false, reason: "token_invalid", detail: "sub must be a user id of 1-64 characters [A-Za-z0-9_-]" };
  }
  const claimedDevice = payload["device_id"];
  if (claimedDevice !== undefined && (typeof claimedDevice !== "string" || !isDeviceId(claimedDevice))) {
    return { ok: false, reason: "token_invalid", detail: "device_id must be a device id of 1-64 characters [A-Za-z0-9_-]" };
  }
  return { ok: true, identity: { userId, deviceId: claimedDevice } };
}

class JoseTokenVerifier implements TokenVerifier {
  constructor(
    private readonly key: KeySource,
    private readonly issuer: string,
    private readonly audience: string,
    private readonly algorithms: string[],
  ) {}

  async verify(token: string): Promise<VerifyOutcome> {
    try {
      const options = { issuer: this.issuer, audience: this.audience, requiredClaims: ["exp", "sub"], algorithms: this.algorithms };
      const { payload } =
        typeof this.key === "function" ? await jwtVerify(token, this.key, options) : await jwtVerify(token, this.key, options);
      return identityOf(payload);
    } catch (error) {
      if (error instanceof errors.JWTExpired) return { ok: false, reason: "token_expired", detail: "exp has passed" };
      if (error instanceof errors.JOSEError) return { ok: false, reason: "token_invalid", detail: error.code };
      return { ok: false, reason: "token_invalid", detail: "unverifiable token" };
    }
  }
}

export async function createTokenVerifier(auth: EdgeAuthConfig): Promise<TokenVerifier> {
  if (auth.mode === "dev") {
    const { publicJwk } = await ensureDevKeyPair(auth.devKeyDirectory);
    const key = await importJWK(publicJwk, "ES256");
    if (key instanceof Uint8Array) throw new Error("the dev public key must be asymmetric");
    return new JoseTokenVerifier(key, devIssuer, devAudience, ["ES256"]);
  }
  const algorithms = ["RS256", "ES256", "EdDSA", "PS256", "ES384", "RS512"];
  if (auth.jwksUrl !== undefined) {
    return new JoseTokenVerifier(createRemoteJWKSet(new URL(auth.jwksUrl)), auth.issuer, auth.audience, algorithms);
  }
  if (auth.jwksFile === undefined) throw new Error("jwks mode needs a JWKS URL or file");
  const parsed: unknown = JSON.parse(await readFile(auth.jwksFile, "utf8"));
  if (typeof parsed !== "object" || parsed === null || !Array.isArray((parsed as { keys?: unknown }).keys)) {
    throw new Error(`${auth.jwksFile} is not a JWKS ({"keys": [...]})`);
  }
  return new JoseTokenVerifier(createLocalJWKSet(parsed as Parameters<typeof createLocalJWKSet>[0]), auth.issuer, auth.audience, algorithms);
}
