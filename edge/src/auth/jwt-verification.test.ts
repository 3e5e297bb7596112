// The node:crypto JWT verification against the rules it states, and against jose's jwtVerify (the
// verifier it replaced) on random claim sets: both must accept, refuse and call expired the same tokens.
import { createPublicKey, generateKeyPairSync, sign as signBytes, type KeyObject } from "node:crypto";
import fc from "fast-check";
import { jwtVerify, SignJWT, errors, type JWTPayload } from "jose";
import { describe, expect, it } from "vitest";
import { parseJwt, verifyParsedJwt, type JwtAlgorithm, type JwtRules } from "./jwt-verification.ts";

const issuer = "https://issuer.example";
const audience = "cellwire";
const nowSeconds = 1_800_000_000;
const rules: JwtRules = { issuer, audience, algorithms: ["RS256", "PS256", "ES256", "ES384", "EdDSA"], clockToleranceSeconds: 0 };

const es256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const es384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
const rsa2048 = generateKeyPairSync("rsa", { modulusLength: 2048 });
const rsa1024 = generateKeyPairSync("rsa", { modulusLength: 1024 });
const ed25519 = generateKeyPairSync("ed25519");

const validClaims: JWTPayload = { iss: issuer, aud: audience, sub: "alice", exp: nowSeconds + 3600, iat: nowSeconds };

function sign(privateKey: KeyObject, alg: JwtAlgorithm, claims: JWTPayload = validClaims): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg }).sign(privateKey);
}

/** Signs what jose refuses to sign (a short RSA key, unknown crit headers): RS256 or ES256 by hand. */
function signRaw(privateKey: KeyObject, header: Record<string, unknown>, claims: JWTPayload): string {
  const input = `${encode(header)}.${encode(claims)}`;
  const signature =
    header["alg"] === "ES256"
      ? signBytes("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" })
      : signBytes("sha256", Buffer.from(input), privateKey);
  return `${input}.${signature.toString("base64url")}`;
}

function verify(token: string, publicKey: KeyObject, at = nowSeconds): ReturnType<typeof verifyParsedJwt> {
  const parsed = parseJwt(token, rules.algorithms);
  return parsed.ok ? verifyParsedJwt(parsed, publicKey, rules, at) : parsed;
}

function segments(token: string): [string, string, string] {
  const [header = "", payload = "", signature = ""] = token.split(".");
  return [header, payload, signature];
}

function encode(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

describe("verifyParsedJwt", () => {
  it.each([
    ["ES256", es256],
    ["ES384", es384],
    ["RS256", rsa2048],
    ["PS256", rsa2048],
    ["EdDSA", ed25519],
  ] as const)("accepts a valid %s token and gives its claims", async (alg, pair) => {
    const outcome = verify(await sign(pair.privateKey, alg), pair.publicKey);
    expect(outcome).toEqual({ ok: true, claims: validClaims });
  });

  it("refuses a key that does not fit the algorithm the token names (no algorithm confusion)", async () => {
    expect(verify(await sign(es384.privateKey, "ES384"), es256.publicKey)).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/ES384 needs an EC key on secp384r1/) as unknown,
    });
    expect(verify(await sign(es256.privateKey, "ES256"), rsa2048.publicKey)).toMatchObject({ ok: false, reason: "token_invalid" });
    expect(verify(await sign(rsa2048.privateKey, "RS256"), es256.publicKey)).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/RS256 needs an RSA key/) as unknown,
    });
    expect(verify(signRaw(rsa1024.privateKey, { alg: "RS256" }, validClaims), rsa1024.publicKey)).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/2048 bits/) as unknown,
    });
    expect(verify(await sign(ed25519.privateKey, "EdDSA"), es256.publicKey)).toMatchObject({ ok: false, reason: "token_invalid" });
    expect(verify(await sign(es256.privateKey, "ES256"), es256.privateKey)).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/not a public key/) as unknown,
    });
  });

  it("refuses a changed payload, a changed signature and a signature of another key", async () => {
    const token = await sign(es256.privateKey, "ES256");
    const [header, payload, signature] = segments(token);
    const forged = encode({ ...validClaims, sub: "mallory" });
    expect(verify(`${header}.${forged}.${signature}`, es256.publicKey)).toMatchObject({
      ok: false,
      detail: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
    const flipped = `${signature.slice(0, 10)}${signature[10] === "A" ? "B" : "A"}${signature.slice(11)}`;
    expect(verify(`${header}.${payload}.${flipped}`, es256.publicKey)).toMatchObject({
      ok: false,
      detail: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" });
    expect(verify(await sign(other.privateKey, "ES256"), es256.publicKey)).toMatchObject({
      ok: false,
      detail: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
    });
  });

  it("refuses alg none, an algorithm not allowed, crit and b64 headers", async () => {
    const payload = encode(validClaims);
    expect(parseJwt(`${encode({ alg: "none" })}.${payload}.`, rules.algorithms)).toMatchObject({ ok: false });
    expect(parseJwt(`${encode({ alg: "none" })}.${payload}.AAAA`, rules.algorithms)).toMatchObject({
      ok: false,
      detail: "ERR_JOSE_ALG_NOT_ALLOWED",
    });
    expect(parseJwt(`${encode({ alg: "HS256" })}.${payload}.AAAA`, rules.algorithms)).toMatchObject({
      ok: false,
      detail: "ERR_JOSE_ALG_NOT_ALLOWED",
    });
    expect(parseJwt(signRaw(es256.privateKey, { alg: "ES256", crit: ["exp"], exp: 1 }, validClaims), rules.algorithms)).toMatchObject({
      ok: false,
      detail: "ERR_JOSE_NOT_SUPPORTED",
    });
    expect(parseJwt(`${encode({ alg: "ES256", b64: false })}.${payload}.AAAA`, rules.algorithms)).toMatchObject({
      ok: false,
      detail: "ERR_JOSE_NOT_SUPPORTED",
    });
    expect(parseJwt(`${encode({ alg: "ES256", kid: 7 })}.${payload}.AAAA`, rules.algorithms)).toMatchObject({ ok: false });
  });

  it("refuses malformed tokens: segments, padding, characters outside base64url, headers and claims that are not JSON objects", async () => {
    const token = await sign(es256.privateKey, "ES256");
    const [header, payload, signature] = segments(token);
    for (const malformed of [
      "",
      "a.b",
      `${token}.x`,
      `${header}..${signature}`,
      `.${payload}.${signature}`,
      `${header}.${payload}.`,
      `${header}=.${payload}.${signature}`,
      `${header}.${payload}.${signature} `,
      `${header}.${payload}.${signature}+`,
    ]) {
      expect(verify(malformed, es256.publicKey), malformed).toMatchObject({ ok: false, reason: "token_invalid" });
    }
    expect(parseJwt(`${encode(["ES256"])}.${payload}.${signature}`, rules.algorithms)).toMatchObject({ ok: false });
    // A valid signature over a claims set without iss, aud, exp or sub.
    expect(verify(await new SignJWT({}).setProtectedHeader({ alg: "ES256" }).sign(es256.privateKey), es256.publicKey)).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/missing iss/) as unknown,
    });
  });

  it("refuses a claims set that is not UTF-8 JSON, though its signature holds", async () => {
    const headerSegment = encode({ alg: "EdDSA" });
    for (const payloadBytes of [Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), Buffer.from("[1,2]"), Buffer.from("not json")]) {
      const payloadSegment = payloadBytes.toString("base64url");
      const signature = signBytes(null, Buffer.from(`${headerSegment}.${payloadSegment}`), ed25519.privateKey).toString("base64url");
      expect(verify(`${headerSegment}.${payloadSegment}.${signature}`, ed25519.publicKey)).toMatchObject({
        ok: false,
        reason: "token_invalid",
        detail: expect.stringMatching(/claims set/) as unknown,
      });
    }
  });

  it("takes the audience from a string or an array, and exp as expired from its second on", async () => {
    expect(verify(await sign(es256.privateKey, "ES256", { ...validClaims, aud: ["other", audience] }), es256.publicKey)).toMatchObject({
      ok: true,
    });
    expect(verify(await sign(es256.privateKey, "ES256", { ...validClaims, aud: ["other"] }), es256.publicKey)).toMatchObject({
      ok: false,
      reason: "token_invalid",
    });
    const expiring = await sign(es256.privateKey, "ES256", { ...validClaims, exp: nowSeconds + 10 });
    expect(verify(expiring, es256.publicKey, nowSeconds + 9)).toMatchObject({ ok: true });
    expect(verify(expiring, es256.publicKey, nowSeconds + 10)).toEqual({ ok: false, reason: "token_expired", detail: "exp has passed" });
  });

  it("allows the clock tolerance on exp and nbf, and not a second more", async () => {
    const tolerant: JwtRules = { ...rules, clockToleranceSeconds: 30 };
    const check = (token: string, at: number): ReturnType<typeof verifyParsedJwt> => {
      const parsed = parseJwt(token, tolerant.algorithms);
      return parsed.ok ? verifyParsedJwt(parsed, es256.publicKey, tolerant, at) : parsed;
    };
    const expiring = await sign(es256.privateKey, "ES256", { ...validClaims, exp: nowSeconds + 10 });
    expect(check(expiring, nowSeconds + 39)).toMatchObject({ ok: true });
    expect(check(expiring, nowSeconds + 40)).toEqual({ ok: false, reason: "token_expired", detail: "exp has passed" });
    const early = await sign(es256.privateKey, "ES256", { ...validClaims, nbf: nowSeconds + 30 });
    expect(check(early, nowSeconds)).toMatchObject({ ok: true });
    expect(check(early, nowSeconds - 1)).toMatchObject({ ok: false, reason: "token_invalid" });
  });
});

const claimValue = <T>(values: readonly T[]): fc.Arbitrary<T | undefined> => fc.option(fc.constantFrom(...values), { nil: undefined });

describe("the same verdicts as jose's jwtVerify", () => {
  it("on random claim sets around now, for ES256 tokens", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          iss: claimValue<unknown>([issuer, "https://other.example", 5]),
          aud: claimValue<unknown>([audience, [audience], ["other", audience], "other", ["other"], [], 7]),
          sub: claimValue<unknown>(["alice", 3]),
          exp: claimValue<unknown>([nowSeconds - 1, nowSeconds, nowSeconds + 1, nowSeconds + 3600, "soon"]),
          nbf: claimValue<unknown>([nowSeconds - 1, nowSeconds, nowSeconds + 1, "later"]),
          iat: claimValue<unknown>([nowSeconds - 60, nowSeconds + 60, "then"]),
        }),
        async (drawn) => {
          const claims = Object.fromEntries(Object.entries(drawn).filter(([, value]) => value !== undefined)) as JWTPayload;
          const token = await sign(es256.privateKey, "ES256", claims);
          const ours = verify(token, es256.publicKey);
          const theirs = await jwtVerify(token, es256.publicKey, {
            issuer,
            audience,
            requiredClaims: ["exp", "sub"],
            algorithms: ["ES256"],
            currentDate: new Date(nowSeconds * 1000),
          }).then(
            () => "ok",
            (error: unknown) => (error instanceof errors.JWTExpired ? "token_expired" : "token_invalid"),
          );
          expect(ours.ok ? "ok" : ours.reason, JSON.stringify(claims)).toBe(theirs);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("on a key from a JWK", async () => {
    const publicKey = createPublicKey({ key: es256.publicKey.export({ format: "jwk" }), format: "jwk" });
    expect(verify(await sign(es256.privateKey, "ES256"), publicKey)).toMatchObject({ ok: true });
  });
});
