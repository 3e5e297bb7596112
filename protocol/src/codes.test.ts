// Close codes sit in the range that tells a client what to do; every code is unique; and docs/protocol.md
// documents every error code and close code in a table row, so the two cannot drift apart.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  cellErrorCodes,
  closeAdvice,
  closeCodes,
  closeReasonList,
  closeReasonOf,
  errorCodeList,
  errorCodes,
  isRetryable,
  standardCloseCodes,
  upgradeRefusalList,
  upgradeRefusals,
  type CloseAdvice,
} from "./codes.ts";

const protocolDocument = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
/** Each markdown table row of docs/protocol.md, split into trimmed cells. */
const tableRows = protocolDocument
  .split("\n")
  .filter((line) => line.trimStart().startsWith("|"))
  .map((line) =>
    line
      .trim()
      .replace(/^\||\|$/g, "")
      .split("|")
      .map((cell) => cell.trim()),
  );

function adviceForRange(code: number): CloseAdvice {
  if (code < 4100) return "reconnect";
  if (code < 4200) return "refresh_token";
  return "stop";
}

describe("close codes", () => {
  it.each(closeReasonList)("%s sits in the application range 4000–4299", (reason) => {
    const { code } = closeCodes[reason];
    expect(Number.isInteger(code)).toBe(true);
    expect(code).toBeGreaterThanOrEqual(4000);
    expect(code).toBeLessThanOrEqual(4299);
  });

  it("are unique", () => {
    const numbers = closeReasonList.map((reason) => closeCodes[reason].code);
    expect(new Set(numbers).size).toBe(numbers.length);
  });

  it("put each reason in the range that matches what a client must do", () => {
    expect(closeAdvice(closeCodes.going_away.code)).toBe("reconnect");
    expect(closeAdvice(closeCodes.slow_consumer.code)).toBe("reconnect");
    expect(closeAdvice(closeCodes.internal_error.code)).toBe("reconnect");
    expect(closeAdvice(closeCodes.token_invalid.code)).toBe("refresh_token");
    expect(closeAdvice(closeCodes.token_expired.code)).toBe("refresh_token");
    expect(closeAdvice(closeCodes.authentication_timeout.code)).toBe("refresh_token");
    expect(closeAdvice(closeCodes.protocol_violation.code)).toBe("stop");
    expect(closeAdvice(closeCodes.unsupported_protocol_version.code)).toBe("stop");
    // A client with fewer live sockets than the limit must never be told to stop (docs/decisions/0018).
    expect(closeAdvice(closeCodes.too_many_sessions.code)).toBe("reconnect");
    expect(closeAdvice(closeCodes.stale_session.code)).toBe("reconnect");
    for (const reason of closeReasonList)
      expect(closeAdvice(closeCodes[reason].code), reason).toBe(adviceForRange(closeCodes[reason].code));
  });

  it("advise by range at every number of the ranges and at their edges", () => {
    for (let code = 4000; code <= 4299; code++) expect(closeAdvice(code), String(code)).toBe(adviceForRange(code));
  });

  it("advise reconnecting on the standard codes a client may see", () => {
    for (const code of Object.values(standardCloseCodes)) expect(closeAdvice(code), String(code)).toBe("reconnect");
    expect(standardCloseCodes).toEqual({ normal: 1000, goingAway: 1001, abnormal: 1006, messageTooBig: 1009 });
  });

  it("map numbers back to reasons", () => {
    for (const reason of closeReasonList) expect(closeReasonOf(closeCodes[reason].code)).toBe(reason);
    expect(closeReasonOf(1000)).toBeUndefined();
    expect(closeReasonOf(4299)).toBeUndefined();
  });
});

describe("error codes", () => {
  it("say whether they are retryable", () => {
    for (const code of errorCodeList) expect(isRetryable(code)).toBe(errorCodes[code].retryable);
    expect(isRetryable("not_a_member")).toBe(false);
    expect(isRetryable("invalid_field")).toBe(false);
    expect(isRetryable("cell_unavailable")).toBe(true);
    expect(isRetryable("rate_limited")).toBe(true);
  });

  it("are snake_case and distinct from the cell-internal codes", () => {
    for (const code of errorCodeList) expect(code).toMatch(/^[a-z]+(_[a-z]+)*$/);
    for (const code of Object.keys(cellErrorCodes)) expect(errorCodeList).not.toContain(code);
  });
});

describe("docs/protocol.md", () => {
  it.each(errorCodeList)("documents the error code %s in a table row with its retryability", (code) => {
    const row = tableRows.find((cells) => cells[0] === `\`${code}\``);
    expect(row, `no table row starts with \`${code}\``).toBeDefined();
    expect(row?.[1]).toBe(errorCodes[code].retryable ? "yes" : "no");
  });

  it.each(Object.keys(cellErrorCodes))("documents the cell-internal code %s in a table row", (code) => {
    expect(tableRows.some((cells) => cells[0] === `\`${code}\``)).toBe(true);
  });

  it.each(closeReasonList)("documents the close code %s in a table row with its number", (reason) => {
    const row = tableRows.find((cells) => cells[1] === `\`${reason}\``);
    expect(row, `no table row has \`${reason}\` in its second cell`).toBeDefined();
    expect(row?.[0]).toBe(String(closeCodes[reason].code));
  });

  it.each(upgradeRefusalList)("documents the upgrade refusal %s in a table row with its HTTP status", (refusal) => {
    const row = tableRows.find((cells) => cells[1] === `\`${refusal}\``);
    expect(row, `no table row has \`${refusal}\` in its second cell`).toBeDefined();
    expect(row?.[0]).toBe(String(upgradeRefusals[refusal].status));
  });

  it("gives each upgrade refusal a distinct 4xx or 5xx status", () => {
    const statuses = upgradeRefusalList.map((refusal) => upgradeRefusals[refusal].status);
    expect(new Set(statuses).size).toBe(statuses.length);
    for (const status of statuses) expect(status >= 400 && status <= 599, String(status)).toBe(true);
  });

  it("documents no error or close code that does not exist", () => {
    const known = new Set<string>([...errorCodeList, ...Object.keys(cellErrorCodes), ...closeReasonList]);
    const documentedErrorCodes = tableRows
      .filter((cells) => /^`[a-z_]+`$/.test(cells[0] ?? "") && /^(yes|no)$/.test(cells[1] ?? ""))
      .map((cells) => (cells[0] ?? "").slice(1, -1));
    const documentedCloseCodes = tableRows.filter((cells) => /^4\d{3}$/.test(cells[0] ?? "")).map((cells) => (cells[1] ?? "").slice(1, -1));
    for (const code of [...documentedErrorCodes, ...documentedCloseCodes]) expect(known.has(code), code).toBe(true);
    expect(documentedErrorCodes.length).toBeGreaterThanOrEqual(errorCodeList.length);
    expect(documentedCloseCodes.length).toBe(closeReasonList.length);
  });
});
