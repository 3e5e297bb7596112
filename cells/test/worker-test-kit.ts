// What the cells' integration tests that start workers by hand share: a logger that keeps the warnings and
// errors for the test to read, and the check that a value set up in beforeAll is there.
import type { ServiceLogger } from "@cellwire/cluster";

/** A worker logger that drops info and keeps every warning and error in `warnings`, in order. */
export function recordingLogger(): { readonly warnings: string[]; readonly logger: ServiceLogger } {
  const warnings: string[] = [];
  const logger: ServiceLogger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (line: string) => void warnings.push(line),
    error: (line: string) => void warnings.push(line),
    child: () => logger,
  };
  return { warnings, logger };
}

/** `value`, or a failure naming `what` when the setup did not make it. */
export function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not ready`);
  return value;
}
