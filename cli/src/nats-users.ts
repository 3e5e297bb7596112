// The users of the shipped nats-server configuration (config/nats/cellwire.conf) with fresh passwords, for
// the servers this repo starts itself: a private server (`npm start`, the test topologies) and the nodes of
// a test NATS cluster. The server reads the passwords from its environment, each service from its own.
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { anonymousNatsAccess, Secret, type NatsAccess, type NatsService } from "@cellwire/cluster";

/** The configuration the repo ships; every server started here runs it unchanged. */
export const natsConfigPath = fileURLToPath(new URL("../../config/nats/cellwire.conf", import.meta.url));

export const natsServices: readonly NatsService[] = ["edge", "worker", "directory", "admin", "launcher"];

export type NatsUser = { readonly user: string; readonly password: string };

export class NatsUsers {
  private constructor(private readonly users: ReadonlyMap<NatsService, NatsUser>) {}

  /**
   * Fresh passwords. nats-server parses a variable's value as a config value, and a password starting
   * with a digit fails to parse as a number: each starts with letters and holds only letters and digits.
   */
  static generate(): NatsUsers {
    return new NatsUsers(
      new Map(natsServices.map((service) => [service, { user: service, password: `cw${randomBytes(18).toString("hex")}` }])),
    );
  }

  user(service: NatsService): NatsUser {
    const found = this.users.get(service);
    if (found === undefined) throw new Error(`no NATS user for ${service}`);
    return found;
  }

  /** The environment a nats-server running the shipped configuration reads its passwords from. */
  serverEnvironment(): Record<string, string> {
    return Object.fromEntries(
      natsServices.map((service) => [`CELLWIRE_NATS_${service.toUpperCase()}_PASSWORD`, this.user(service).password]),
    );
  }

  /** What a process of `service` needs in its environment to connect to `servers` as that service. */
  environmentFor(service: NatsService, servers: readonly string[]): Record<string, string> {
    const { user, password } = this.user(service);
    return { CELLWIRE_NATS_SERVERS: servers.join(","), CELLWIRE_NATS_USER: user, CELLWIRE_NATS_PASSWORD: password };
  }

  /** The NatsAccess a service's config would read from that environment. */
  access(service: NatsService): NatsAccess {
    const { user, password } = this.user(service);
    return { ...anonymousNatsAccess(service), user, password: new Secret(password) };
  }
}
