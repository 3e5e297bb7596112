import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWTPayload } from "jose";
import { devAudience, devIssuer, ensureDevKeyPair, signDevToken } from "./dev-keys.ts";
import { createTokenVerifier, type TokenVerifier, type VerifyOutcome } from "./token-verifier.ts";

let temporaryDirectory: string;
let devKeyDirectory: string;
let devVerifier: TokenVerifier;
let devPrivateKey: CryptoKey;

type SigningOptions = {
  readonly claims?: JWTPayload;
  readonly issuer?: string;
  readonly audience?: string;
  readonly expiration?: string | number | undefined;
  readonly kid?: string;
};

/** Signs a token with full control of its claims; `expiration: undefined` leaves exp out. */
function sign(key: CryptoKey, subject: string | undefined, options: SigningOptions): Promise<string> {
  const jwt = new SignJWT(options.claims ?? {})
    .setProtectedHeader(options.kid === undefined ? { alg: "ES256" } : { alg: "ES256", kid: options.kid })
    .setIssuedAt();
  if (subject !== undefined) jwt.setSubject(subject);
  if (options.issuer !== undefined) jwt.setIssuer(options.issuer);
  if (options.audience !== undefined) jwt.setAudience(options.audience);
  if (!("expiration" in options)) jwt.setExpirationTime("1h");
  else if (options.expiration !== undefined) jwt.setExpirationTime(options.expiration);
  return jwt.sign(key);
}

function signAsDev(subject: string | undefined, options: SigningOptions = {}): Promise<string> {
  return sign(devPrivateKey, subject, { issuer: devIssuer, audience: devAudience, ...options });
}

function expectInvalid(outcome: VerifyOutcome): void {
  expect(outcome.ok).toBe(false);
  if (!outcome.ok) expect(outcome.reason).toBe("token_invalid");
}

beforeAll(async () => {
  temporaryDirectory = await mkdtemp(join(tmpdir(), "cellwire-token-verifier-"));
  devKeyDirectory = join(temporaryDirectory, "dev-keys");
  devVerifier = await createTokenVerifier({ mode: "dev", devKeyDirectory });
  const { privateJwk } = await ensureDevKeyPair(devKeyDirectory);
  const imported = await importJWK(privateJwk, "ES256");
  if (imported instanceof Uint8Array) throw new Error("the dev private key must be asymmetric");
  devPrivateKey = imported;
});

afterAll(async () => {
  await rm(temporaryDirectory, { recursive: true, force: true });
});

describe("dev mode", () => {
  it("verifies a dev token and yields its user and device", async () => {
    const outcome = await devVerifier.verify(await signDevToken(devKeyDirectory, "alice", { deviceId: "laptop" }));
    expect(outcome).toMatchObject({ ok: true, identity: { userId: "alice", deviceId: "laptop" } });
  });

  it("yields the token's exp plus the clock tolerance as the session's expiry, and its iat, on an injected clock", async () => {
    const nowMs = 1_800_000_000_000;
    const verifier = await createTokenVerifier({ mode: "dev", devKeyDirectory }, { clockToleranceMs: 5000, wallNowMs: () => nowMs });
    const token = await new SignJWT({ iat: 1_799_999_990, exp: 1_800_000_010 })
      .setProtectedHeader({ alg: "ES256" })
      .setSubject("alice")
      .setIssuer(devIssuer)
      .setAudience(devAudience)
      .sign(devPrivateKey);
    expect(await verifier.verify(token)).toEqual({
      ok: true,
      identity: { userId: "alice", deviceId: undefined, expiresAtMs: 1_800_000_015_000, issuedAtMs: 1_799_999_990_000 },
    });
    // Within the tolerance after exp: still accepted; at its end: expired.
    const lateVerifier = await createTokenVerifier(
      { mode: "dev", devKeyDirectory },
      { clockToleranceMs: 5000, wallNowMs: () => 1_800_000_014_999 },
    );
    expect(await lateVerifier.verify(token)).toMatchObject({ ok: true });
    const expiredVerifier = await createTokenVerifier(
      { mode: "dev", devKeyDirectory },
      { clockToleranceMs: 5000, wallNowMs: () => 1_800_000_015_000 },
    );
    expect(await expiredVerifier.verify(token)).toMatchObject({ ok: false, reason: "token_expired" });
  });

  it("leaves the device undefined when the token names none", async () => {
    const outcome = await devVerifier.verify(await signDevToken(devKeyDirectory, "bob"));
    expect(outcome).toMatchObject({ ok: true, identity: { userId: "bob", deviceId: undefined } });
  });

  it("reports an expired token as token_expired", async () => {
    const outcome = await devVerifier.verify(await signDevToken(devKeyDirectory, "alice", { expiresInSeconds: -60 }));
    expect(outcome).toMatchObject({ ok: false, reason: "token_expired" });
  });

  it("refuses a wrong issuer or a wrong audience", async () => {
    expectInvalid(await devVerifier.verify(await signAsDev("alice", { issuer: "someone-else" })));
    expectInvalid(await devVerifier.verify(await signAsDev("alice", { audience: "another-service" })));
  });

  it("refuses a token signed by another key pair", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    expectInvalid(await devVerifier.verify(await sign(privateKey, "alice", { issuer: devIssuer, audience: devAudience })));
  });

  it("refuses a token without exp or without sub", async () => {
    expectInvalid(await devVerifier.verify(await signAsDev("alice", { expiration: undefined })));
    expectInvalid(await devVerifier.verify(await signAsDev(undefined)));
  });

  it.each(["victim.>", "", "*", "alice bob", "a".repeat(65)])(
    "refuses the subject %j before it can reach a NATS subject",
    async (subject) => {
      expectInvalid(await devVerifier.verify(await signAsDev(subject)));
    },
  );

  it("refuses a device_id claim that is not a device id", async () => {
    expectInvalid(await devVerifier.verify(await signAsDev("alice", { claims: { device_id: "phone.>" } })));
    expectInvalid(await devVerifier.verify(await signAsDev("alice", { claims: { device_id: 7 } })));
  });

  it("refuses garbage and unsigned tokens without throwing", async () => {
    expectInvalid(await devVerifier.verify("not.a.jwt"));
    expectInvalid(await devVerifier.verify(""));
    const header = Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url");
    const payload = Buffer.from(
      JSON.stringify({ sub: "alice", iss: devIssuer, aud: devAudience, exp: Math.floor(Date.now() / 1000) + 3600 }),
    ).toString("base64url");
    expectInvalid(await devVerifier.verify(`${header}.${payload}.`));
  });
});

describe("jwks mode with EDGE_JWKS_FILE", () => {
  const issuer = "https://issuer.example";
  const audience = "cellwire-production";
  let jwksVerifier: TokenVerifier;
  let issuerKey: CryptoKey;

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    issuerKey = privateKey;
    const jwksFile = join(temporaryDirectory, "jwks.json");
    await writeFile(
      jwksFile,
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "production-1", alg: "ES256", use: "sig" }] }),
    );
    jwksVerifier = await createTokenVerifier({ mode: "jwks", jwksUrl: undefined, jwksFile, issuer, audience });
  });

  it("accepts a token from the issuer and reads device_id", async () => {
    const outcome = await jwksVerifier.verify(
      await sign(issuerKey, "carol", { issuer, audience, kid: "production-1", claims: { device_id: "tablet" } }),
    );
    expect(outcome).toMatchObject({ ok: true, identity: { userId: "carol", deviceId: "tablet" } });
  });

  it("reports an expired token as token_expired", async () => {
    const outcome = await jwksVerifier.verify(
      await sign(issuerKey, "carol", { issuer, audience, kid: "production-1", expiration: Math.floor(Date.now() / 1000) - 60 }),
    );
    expect(outcome).toMatchObject({ ok: false, reason: "token_expired" });
  });

  it("refuses a wrong issuer, a wrong audience, a missing exp and a bad subject", async () => {
    expectInvalid(await jwksVerifier.verify(await sign(issuerKey, "carol", { issuer: devIssuer, audience, kid: "production-1" })));
    expectInvalid(await jwksVerifier.verify(await sign(issuerKey, "carol", { issuer, audience: devAudience, kid: "production-1" })));
    expectInvalid(
      await jwksVerifier.verify(await sign(issuerKey, "carol", { issuer, audience, kid: "production-1", expiration: undefined })),
    );
    expectInvalid(await jwksVerifier.verify(await sign(issuerKey, "victim.>", { issuer, audience, kid: "production-1" })));
  });

  it("refuses a token signed by a key that is not in the JWKS, dev tokens included", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    expectInvalid(await jwksVerifier.verify(await sign(privateKey, "carol", { issuer, audience, kid: "production-1" })));
    expectInvalid(await jwksVerifier.verify(await sign(devPrivateKey, "carol", { issuer, audience })));
  });

  it("picks the key of a JWKS with several by kid and alg, and refuses a kid under another algorithm", async () => {
    const rsa = await generateKeyPair("RS256");
    const jwksFile = join(temporaryDirectory, "jwks-two.json");
    await writeFile(
      jwksFile,
      JSON.stringify({
        keys: [
          { ...(await exportJWK((await generateKeyPair("ES256")).publicKey)), kid: "other-ec", alg: "ES256", use: "sig" },
          { ...(await exportJWK(rsa.publicKey)), kid: "production-rsa", alg: "RS256", use: "sig" },
        ],
      }),
    );
    const verifier = await createTokenVerifier({ mode: "jwks", jwksUrl: undefined, jwksFile, issuer, audience });
    const rsaToken = await new SignJWT({})
      .setProtectedHeader({ alg: "RS256", kid: "production-rsa" })
      .setSubject("erin")
      .setIssuer(issuer)
      .setAudience(audience)
      .setExpirationTime("1h")
      .sign(rsa.privateKey);
    // Twice: the second verification takes the key object kept from the first.
    expect(await verifier.verify(rsaToken)).toMatchObject({ ok: true, identity: { userId: "erin", deviceId: undefined } });
    expect(await verifier.verify(rsaToken)).toMatchObject({ ok: true, identity: { userId: "erin", deviceId: undefined } });
    expectInvalid(await verifier.verify(await sign(issuerKey, "erin", { issuer, audience, kid: "production-rsa" })));
  });

  it("refuses to start from a file that is not a JWKS", async () => {
    const notJwks = join(temporaryDirectory, "not-jwks.json");
    await writeFile(notJwks, JSON.stringify({ kty: "EC" }));
    await expect(createTokenVerifier({ mode: "jwks", jwksUrl: undefined, jwksFile: notJwks, issuer, audience })).rejects.toThrow(
      /not a JWKS/,
    );
  });
});

describe("ensureDevKeyPair", () => {
  it("creates one key pair when concurrent calls race on an empty directory", async () => {
    const directory = join(temporaryDirectory, "race");
    const pairs = await Promise.all(Array.from({ length: 8 }, () => ensureDevKeyPair(directory)));
    const first = pairs[0];
    if (first === undefined) throw new Error("no key pair");
    for (const pair of pairs) expect(pair.privateJwk).toEqual(first.privateJwk);
    expect(first.publicJwk).not.toHaveProperty("d");
    expect(await readdir(directory)).toEqual(["private.jwk.json"]);
    // A later call reads the stored pair rather than making a new one.
    expect((await ensureDevKeyPair(directory)).privateJwk).toEqual(first.privateJwk);
  });

  it("makes tokens that a verifier created from the same directory accepts", async () => {
    const directory = join(temporaryDirectory, "round-trip");
    const [verifier, token] = await Promise.all([
      createTokenVerifier({ mode: "dev", devKeyDirectory: directory }),
      signDevToken(directory, "dave"),
    ]);
    expect(await verifier.verify(token)).toMatchObject({ ok: true, identity: { userId: "dave" } });
  });
});
