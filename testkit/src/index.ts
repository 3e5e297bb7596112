// @cellwire/testkit: test support shared by more than one workspace's tests. Only tests and other test
// support import it (docs/decisions/0026-where-test-code-lives.md); a workspace's own fakes and harnesses
// live in its test/ folder instead.
export { pollUntil, Waiters, type PollOptions } from "./poll.ts";
export { parsePrometheusText, type PrometheusSample, type PrometheusScrape } from "./prometheus-text.ts";
export { silentServiceLogger, type SilentLogger } from "./silent-logger.ts";
