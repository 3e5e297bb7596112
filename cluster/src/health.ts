// What /livez and /readyz say, the same on every process. Live means the process is not wedged (its event
// loop answers); ready means a balancer or a launcher may send it work: each service names the checks
// that decide it (a worker's lease, database and NATS; an edge's NATS and its accepting sessions) and
// the checks that only inform (an edge's directory: cached users keep chatting through its outage).
export interface CheckResult {
  readonly ok: boolean;
  /** Why not, or what it is, for an operator reading /readyz; never a secret. */
  readonly detail?: string;
}

export interface ReadinessCheck {
  readonly name: string;
  readonly check: () => CheckResult | Promise<CheckResult>;
  /** false: reported in the detail but never makes the process unready. Default true. */
  readonly decidesReadiness?: boolean;
}

export interface ReadinessReport {
  readonly ready: boolean;
  readonly checks: Readonly<Record<string, CheckResult & { readonly decidesReadiness: boolean }>>;
}

/** Runs every check; a check that throws counts as failed, with its message as the detail. */
export async function readinessReport(checks: readonly ReadinessCheck[]): Promise<ReadinessReport> {
  const results = await Promise.all(
    checks.map(async (check) => {
      let result: CheckResult;
      try {
        result = await check.check();
      } catch (error) {
        result = { ok: false, detail: error instanceof Error ? error.message : String(error) };
      }
      return [check.name, { ...result, decidesReadiness: check.decidesReadiness ?? true }] as const;
    }),
  );
  const report = Object.fromEntries(results);
  return { ready: results.every(([, result]) => result.ok || !result.decidesReadiness), checks: report };
}
