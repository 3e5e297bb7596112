// The one real-time wait of the services: where a wait must be simulated or tested, a sleep of this type
// is injected instead (the worker's and the edge's Dependencies), so production code names this function.

/** Resolves after `ms` milliseconds of real time (setTimeout: at least that long, never sooner). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
