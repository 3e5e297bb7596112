// How a service proves who it is to NATS and keeps its replies to itself (docs/decisions/0015): a user and
// password per service (the password from a file or the environment, never the command line), optional
// TLS, and an inbox prefix of the service's own, which the server's permissions let only that service's
// user subscribe to. Read once by each service's config; the password stays wrapped so that logging a
// config, or an error that carries it, never prints it.
import { readFile } from "node:fs/promises";
import { inspect } from "node:util";
import type { ConnectionOptions } from "@nats-io/transport-node";
import type { EnvironmentReader } from "./config-kit.ts";
import { ConfigError } from "./errors.ts";

/** The NATS users of config/nats/cellwire.conf; each is also its service's inbox prefix's last token. */
export type NatsService = "edge" | "worker" | "directory" | "admin" | "launcher";

/** A secret value: prints as [redacted] through String(), JSON and util.inspect. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return "[redacted]";
  }
  toJSON(): string {
    return "[redacted]";
  }
  [inspect.custom](): string {
    return "[redacted]";
  }
}

export type NatsTls = {
  /** PEM file of the CA that signed the servers' certificates (CELLWIRE_NATS_TLS_CA_FILE). */
  readonly caFile?: string;
  /** PEM client certificate and key, for servers that verify clients (CELLWIRE_NATS_TLS_CERT_FILE, ..._KEY_FILE). */
  readonly certFile?: string;
  readonly keyFile?: string;
};

export type NatsAccess = {
  readonly service: NatsService;
  /** CELLWIRE_NATS_USER; none connects without credentials (a server that asks for none). */
  readonly user?: string;
  /** CELLWIRE_NATS_PASSWORD, or the contents of CELLWIRE_NATS_PASSWORD_FILE (read at connect). */
  readonly password?: Secret;
  readonly passwordFile?: string;
  /** Set (even empty) when any CELLWIRE_NATS_TLS_* is: the connection then requires TLS. */
  readonly tls?: NatsTls;
  /** `_INBOX.<service>`: replies to this service arrive under it (nats.js inboxPrefix, and RequestMux's). */
  readonly inboxPrefix: string;
};

const userPattern = /^[A-Za-z0-9_-]{1,64}$/;
/** A password file holds one line; more is a wrong path, not a password. */
const passwordFileBytesMax = 4096;

export function readNatsAccess(reader: EnvironmentReader, service: NatsService): NatsAccess {
  const user = reader.optionalString("CELLWIRE_NATS_USER");
  const passwordValue = reader.optionalString("CELLWIRE_NATS_PASSWORD");
  const passwordFile = reader.optionalString("CELLWIRE_NATS_PASSWORD_FILE");
  const caFile = reader.optionalString("CELLWIRE_NATS_TLS_CA_FILE");
  const certFile = reader.optionalString("CELLWIRE_NATS_TLS_CERT_FILE");
  const keyFile = reader.optionalString("CELLWIRE_NATS_TLS_KEY_FILE");
  // The value is never echoed: a config error is printed.
  if (user !== undefined && !userPattern.test(user)) throw new ConfigError("CELLWIRE_NATS_USER must be 1 to 64 of A-Z a-z 0-9 _ -");
  if (passwordValue !== undefined && passwordFile !== undefined)
    throw new ConfigError("give one of CELLWIRE_NATS_PASSWORD and CELLWIRE_NATS_PASSWORD_FILE, not both");
  if ((passwordValue !== undefined || passwordFile !== undefined) !== (user !== undefined)) {
    throw new ConfigError("CELLWIRE_NATS_USER and a password (CELLWIRE_NATS_PASSWORD or CELLWIRE_NATS_PASSWORD_FILE) go together");
  }
  if ((certFile === undefined) !== (keyFile === undefined))
    throw new ConfigError("CELLWIRE_NATS_TLS_CERT_FILE and CELLWIRE_NATS_TLS_KEY_FILE go together");
  const tlsAsked = caFile !== undefined || certFile !== undefined;
  return {
    service,
    ...(user === undefined ? {} : { user }),
    ...(passwordValue === undefined ? {} : { password: new Secret(passwordValue) }),
    ...(passwordFile === undefined ? {} : { passwordFile }),
    ...(tlsAsked
      ? {
          tls: {
            ...(caFile === undefined ? {} : { caFile }),
            ...(certFile === undefined ? {} : { certFile }),
            ...(keyFile === undefined ? {} : { keyFile }),
          },
        }
      : {}),
    inboxPrefix: inboxPrefixOf(service),
  };
}

export function inboxPrefixOf(service: NatsService): string {
  return `_INBOX.${service}`;
}

/** No credentials, no TLS: the machine's open development server. */
export function anonymousNatsAccess(service: NatsService): NatsAccess {
  return { service, inboxPrefix: inboxPrefixOf(service) };
}

/** The nats.js connect options for `access` (reads the password file). */
export async function natsConnectOptions(access: NatsAccess): Promise<Pick<ConnectionOptions, "user" | "pass" | "tls" | "inboxPrefix">> {
  const password = access.passwordFile === undefined ? access.password?.reveal() : await readPasswordFile(access.passwordFile);
  return {
    inboxPrefix: access.inboxPrefix,
    ...(access.user === undefined || password === undefined ? {} : { user: access.user, pass: password }),
    ...(access.tls === undefined ? {} : { tls: { ...access.tls } }),
  };
}

async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new ConfigError(
      `CELLWIRE_NATS_PASSWORD_FILE cannot be read: ${error instanceof Error && "code" in error ? String(error.code) : "error"}`,
    );
  }
  const password = text.trim();
  if (password === "" || text.length > passwordFileBytesMax || password.includes("\n")) {
    throw new ConfigError(`CELLWIRE_NATS_PASSWORD_FILE must hold one non-empty line of at most ${passwordFileBytesMax} bytes`);
  }
  return password;
}
