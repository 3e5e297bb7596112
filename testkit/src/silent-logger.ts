// A logger that writes nothing, for tests whose subject takes a service logger (@cellwire/cluster's
// ServiceLogger, matched by shape: testkit depends on no workspace package).
export type SilentLogger = {
  readonly debug: (message: string) => void;
  readonly info: (message: string) => void;
  readonly warn: (message: string) => void;
  readonly error: (message: string) => void;
  readonly child: () => SilentLogger;
};

export const silentServiceLogger: SilentLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentServiceLogger,
};
