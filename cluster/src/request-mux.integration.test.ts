// RequestMux against the machine's NATS: replies reach their own requester among many in flight, a
// subject nobody listens on answers no_responders at once (the server's 503), a silent responder times out
// within a sweep of the timeout, and a request after the connection closed answers closed.
import { randomBytes } from "node:crypto";
import { afterAll, expect, it } from "vitest";
import { RequestMux } from "./request-mux.ts";
import { connectNats } from "./service-runtime.ts";
import type { ServiceLogger } from "./service-logger.ts";
import { anonymousNatsAccess } from "./nats-access.ts";
import { silentServiceLogger } from "@cellwire/testkit";

const logger: ServiceLogger = silentServiceLogger;
const prefix = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const connection = await connectNats(["127.0.0.1:4222"], "request-mux-test", logger, anonymousNatsAccess("edge"));
afterAll(async () => {
  if (!connection.isClosed()) await connection.close();
});
const decoder = new TextDecoder();

it("routes each reply to its own request, many in flight at once", async () => {
  const subject = `${prefix}.echo`;
  const responder = connection.subscribe(subject, {
    callback: (_error, message) => void message.respond(`echo ${decoder.decode(message.data)}`),
  });
  await connection.flush();
  const mux = RequestMux.of(connection);
  const outcomes = await Promise.all(Array.from({ length: 500 }, (_, index) => mux.request(subject, String(index), 5000)));
  expect(outcomes.map((outcome) => (outcome.ok ? decoder.decode(outcome.data) : outcome.reason))).toEqual(
    Array.from({ length: 500 }, (_, index) => `echo ${index}`),
  );
  expect(mux.pendingCount).toBe(0);
  responder.unsubscribe();
});

it("answers no_responders for a subject nobody listens on, without waiting for the timeout", async () => {
  const startedAt = performance.now();
  expect(await RequestMux.of(connection).request(`${prefix}.nobody`, "?", 5000)).toEqual({ ok: false, reason: "no_responders" });
  expect(performance.now() - startedAt).toBeLessThan(2000);
});

it("times out a silent responder after the timeout, within a sweep of it", async () => {
  const subject = `${prefix}.silent`;
  const silent = connection.subscribe(subject, { callback: () => undefined });
  await connection.flush();
  const startedAt = performance.now();
  expect(await RequestMux.of(connection).request(subject, "?", 200)).toEqual({ ok: false, reason: "timeout" });
  const waitedMs = performance.now() - startedAt;
  expect(waitedMs).toBeGreaterThanOrEqual(199);
  expect(waitedMs).toBeLessThan(1000);
  silent.unsubscribe();
});

it("answers closed once the connection is closed", async () => {
  const closing = await connectNats(["127.0.0.1:4222"], "request-mux-test-closing", logger, anonymousNatsAccess("edge"));
  const mux = RequestMux.of(closing);
  await closing.close();
  expect(await mux.request(`${prefix}.any`, "?", 5000)).toEqual({ ok: false, reason: "closed" });
});
