// Stub: the load scripts and the history checker described in loadtest/README.md are not written yet.
// This export only gives the workspace an entry point.
export const loadtestStatus = "stub" as const;
