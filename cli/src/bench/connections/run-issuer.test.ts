import { access } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { createTokenVerifier } from "@cellwire/edge";
import { createRunIssuer, issuerTokenSigner } from "./run-issuer.ts";

describe("a connections run's own issuer", () => {
  it.each(["RS256", "ES256"] as const)(
    "signs %s tokens an edge in jwks mode accepts from its JWKS file, and removes the file",
    async (algorithm) => {
      const issuer = await createRunIssuer(algorithm, "run1");
      const environment = issuer.environment;
      expect(environment["EDGE_AUTH_MODE"]).toBe("jwks");
      expect(environment["CELLWIRE_DIRECT_CONVERSATION_KEY"]?.length).toBe(64);
      const jwksFile = environment["EDGE_JWKS_FILE"] ?? "";
      const verifier = await createTokenVerifier({
        mode: "jwks",
        jwksUrl: undefined,
        jwksFile,
        issuer: environment["EDGE_JWT_ISSUER"] ?? "",
        audience: environment["EDGE_JWT_AUDIENCE"] ?? "",
      });
      const sign = await issuerTokenSigner(issuer.issuerKey);
      const outcome = await verifier.verify(await sign("user_1", "bench"));
      expect(outcome).toMatchObject({ ok: true, identity: { userId: "user_1", deviceId: "bench" } });

      // Another run's key is refused: the edge really checks the signature against this run's JWKS.
      const other = await createRunIssuer(algorithm, "run1");
      const foreign = await (await issuerTokenSigner(other.issuerKey))("user_1", "bench");
      expect(await verifier.verify(foreign)).toMatchObject({ ok: false, reason: "token_invalid" });
      await other.remove();

      await issuer.remove();
      await expect(access(jwksFile)).rejects.toThrow();
    },
  );
});
