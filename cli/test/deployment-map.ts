// compose.yaml as the production map, checked without a Docker engine (there is none in CI): the files it
// names are read and decoded here, and `deploymentProblems` lists every way they disagree with the code or
// with each other. cli/src/compose.test.ts runs it on the files as shipped (no problem) and on copies with
// one planted mistake each (that mistake found). Test code: nothing ships from here.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { load as loadYaml } from "js-yaml";
import { createServiceMetrics, registerNatsConnectionMetrics, type Environment } from "@cellwire/cluster";
import { EdgeMetrics, loadEdgeConfig } from "@cellwire/edge";
import { createWorkerCounters, loadWorkerConfig, registerWorkerGauges } from "@cellwire/cells";
import { createDirectoryMetrics, loadDirectoryConfig } from "@cellwire/directory";
import { createAdminApiMetrics } from "../src/admin-api/admin-api-metrics.ts";
import { adminApiConfigDefaults, loadAdminApiConfig } from "../src/admin-api/config.ts";
import { errorCodeList } from "@cellwire/protocol";
import { cliCommands } from "../src/cli-commands.ts";

// ---- What the files say, decoded ----

export interface ComposeService {
  image?: string;
  build: boolean;
  /** The exec form; a string command (run by a shell) is a problem of its own. */
  command?: string[];
  commandIsString: boolean;
  /** As written, before interpolation. */
  environment: Record<string, string>;
  profiles: string[];
  volumes: string[];
  dependsOn: string[];
  /** The secrets compose mounts at /run/secrets/<name>. */
  secrets: string[];
  ipv4Address?: string;
}

export interface ScrapeJob {
  name: string;
  targets: string[];
  /** authorization.credentials_file: the file the scraper reads its bearer token from. */
  credentialsFile: string | undefined;
}

export interface AlertRule {
  alert: string;
  expr: string;
  severity: string | undefined;
  summary: string | undefined;
}

export interface Deployment {
  readonly root: string;
  services: Record<string, ComposeService>;
  /** The operator's variables compose interpolates (a .env file), here a sample with every secret set. */
  operatorEnvironment: Record<string, string>;
  /** The image's ENV lines (Dockerfile): what a Cellwire service has before compose sets anything. */
  imageEnvironment: Record<string, string>;
  natsUsers: string[];
  scrapeJobs: ScrapeJob[];
  ruleFiles: string[];
  alerts: AlertRule[];
  dashboardExpressions: string[];
  dashboardDatasourceUids: string[];
  provisionedDatasourceUids: string[];
  /** The `server` lines of deploy/haproxy/haproxy.cfg; `options` is the rest of the line and its default-server's. */
  haproxyServers: { name: string; host: string; port: string; options: string[] }[];
  /** Every `mode` haproxy.cfg sets (defaults, frontends, backends). */
  haproxyModes: string[];
  operationsDoc: string;
}

/** A sample of the .env compose.yaml's header tells the operator to write: every secret, the JWKS settings. */
export const sampleOperatorEnvironment: Readonly<Record<string, string>> = {
  CELLWIRE_NATS_EDGE_PASSWORD: "pedge0",
  CELLWIRE_NATS_WORKER_PASSWORD: "pworker0",
  CELLWIRE_NATS_DIRECTORY_PASSWORD: "pdirectory0",
  CELLWIRE_NATS_ADMIN_PASSWORD: "padmin0",
  CELLWIRE_NATS_LAUNCHER_PASSWORD: "plauncher0",
  CELLWIRE_NATS_ROUTE_PASSWORD: "proute0",
  CELLWIRE_POSTGRES_PASSWORD: "ppostgres0",
  CELLWIRE_DIRECT_CONVERSATION_KEY: "a-sample-direct-conversation-key-of-48-characters".slice(0, 48),
  ADMIN_TOKEN: "a-sample-admin-token-".padEnd(64, "x"),
  ADMIN_METRICS_TOKEN: "a-sample-admin-metrics-token-".padEnd(64, "x"),
  GRAFANA_ADMIN_PASSWORD: "grafana0",
  EDGE_JWKS_URL: "https://auth.example.com/.well-known/jwks.json",
  EDGE_JWT_ISSUER: "https://auth.example.com/",
  EDGE_JWT_AUDIENCE: "cellwire",
  EDGE_ALLOWED_ORIGINS: "https://chat.example.com",
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function recordAt(value: unknown, where: string): Record<string, unknown> {
  if (!isRecord(value)) throw new Error(`${where} must be a mapping`);
  return value;
}

function listAt(value: unknown, where: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new Error(`${where} must be a list`);
  return value;
}

function textAt(value: unknown, where: string): string {
  if (typeof value !== "string") throw new Error(`${where} must be a string`);
  return value;
}

function optionalTextAt(value: unknown, where: string): string | undefined {
  return value === undefined ? undefined : textAt(value, where);
}

/** Compose takes a value as text, a number or a boolean; null (`KEY:`) is the empty string here. */
function scalarText(value: unknown, where: string): string {
  if (value === null) return "";
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return String(value);
  throw new Error(`${where} must be a scalar`);
}

function decodeEnvironment(value: unknown, where: string): Record<string, string> {
  if (value === undefined) return {};
  if (Array.isArray(value)) {
    return Object.fromEntries(
      value.map((item, index) => {
        const entry = textAt(item, `${where}[${index}]`);
        const equals = entry.indexOf("=");
        return equals < 0 ? [entry, ""] : [entry.slice(0, equals), entry.slice(equals + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(recordAt(value, where)).map(([name, raw]) => [name, scalarText(raw, `${where}.${name}`)]));
}

export function decodeComposeService(value: unknown, where: string): ComposeService {
  const service = recordAt(value, where);
  const command = service["command"];
  const dependsOn = service["depends_on"];
  const networks = service["networks"];
  const defaultNetwork = isRecord(networks) ? networks["default"] : undefined;
  return {
    ...(service["image"] === undefined ? {} : { image: textAt(service["image"], `${where}.image`) }),
    build: service["build"] !== undefined,
    ...(Array.isArray(command) ? { command: command.map((part, index) => scalarText(part, `${where}.command[${index}]`)) } : {}),
    commandIsString: typeof command === "string",
    environment: decodeEnvironment(service["environment"], `${where}.environment`),
    profiles: listAt(service["profiles"], `${where}.profiles`).map((profile, index) => textAt(profile, `${where}.profiles[${index}]`)),
    volumes: listAt(service["volumes"], `${where}.volumes`).map((volume, index) => textAt(volume, `${where}.volumes[${index}]`)),
    dependsOn: Array.isArray(dependsOn)
      ? dependsOn.map((name, index) => textAt(name, `${where}.depends_on[${index}]`))
      : Object.keys(dependsOn === undefined ? {} : recordAt(dependsOn, `${where}.depends_on`)),
    // The short form names the secret; the long form's source does.
    secrets: listAt(service["secrets"], `${where}.secrets`).map((secret, index) =>
      textAt(isRecord(secret) ? secret["source"] : secret, `${where}.secrets[${index}]`),
    ),
    ...(isRecord(defaultNetwork) && defaultNetwork["ipv4_address"] !== undefined
      ? { ipv4Address: textAt(defaultNetwork["ipv4_address"], `${where}.networks.default.ipv4_address`) }
      : {}),
  };
}

function readYaml(root: string, path: string): unknown {
  return loadYaml(readFileSync(join(root, path), "utf8"), { filename: path });
}

/** Every expression of a dashboard's panels, rows' nested panels included. */
function dashboardTargets(panels: unknown[], where: string): { expr: string; datasourceUid: string | undefined }[] {
  return panels.flatMap((panel, index) => {
    const fields = recordAt(panel, `${where}[${index}]`);
    const nested = dashboardTargets(listAt(fields["panels"], `${where}[${index}].panels`), `${where}[${index}].panels`);
    const targets = listAt(fields["targets"], `${where}[${index}].targets`).map((target, targetIndex) => {
      const targetFields = recordAt(target, `${where}[${index}].targets[${targetIndex}]`);
      const datasource = targetFields["datasource"] ?? fields["datasource"];
      return {
        expr: textAt(targetFields["expr"], `${where}[${index}].targets[${targetIndex}].expr`),
        datasourceUid: isRecord(datasource) ? optionalTextAt(datasource["uid"], "datasource.uid") : undefined,
      };
    });
    return [...nested, ...targets];
  });
}

export function readDeployment(root: string): Deployment {
  const compose = recordAt(readYaml(root, "compose.yaml"), "compose.yaml");
  const services = Object.fromEntries(
    Object.entries(recordAt(compose["services"], "services")).map(([name, value]) => [
      name,
      decodeComposeService(value, `services.${name}`),
    ]),
  );
  const prometheus = recordAt(readYaml(root, "deploy/prometheus/prometheus.yml"), "prometheus.yml");
  const scrapeJobs = listAt(prometheus["scrape_configs"], "scrape_configs").map((job, index) => {
    const fields = recordAt(job, `scrape_configs[${index}]`);
    const authorization = fields["authorization"];
    return {
      name: textAt(fields["job_name"], `scrape_configs[${index}].job_name`),
      targets: listAt(fields["static_configs"], "static_configs").flatMap((group) =>
        listAt(recordAt(group, "static_configs[]")["targets"], "targets").map((target) => textAt(target, "target")),
      ),
      credentialsFile: isRecord(authorization)
        ? optionalTextAt(authorization["credentials_file"], "authorization.credentials_file")
        : undefined,
    };
  });
  const ruleFiles = listAt(prometheus["rule_files"], "rule_files").map((file) => textAt(file, "rule_files[]"));
  const alerts = ruleFiles.flatMap((file) =>
    listAt(recordAt(readYaml(root, join("deploy/prometheus", file)), file)["groups"], `${file} groups`).flatMap((group) =>
      listAt(recordAt(group, `${file} group`)["rules"], `${file} rules`).map((rule): AlertRule => {
        const fields = recordAt(rule, `${file} rule`);
        const labels = fields["labels"] === undefined ? {} : recordAt(fields["labels"], "labels");
        const annotations = fields["annotations"] === undefined ? {} : recordAt(fields["annotations"], "annotations");
        return {
          alert: textAt(fields["alert"], `${file} rule.alert`),
          expr: textAt(fields["expr"], `${file} rule.expr`),
          severity: optionalTextAt(labels["severity"], "severity"),
          summary: optionalTextAt(annotations["summary"], "summary"),
        };
      }),
    ),
  );
  const dashboard = recordAt(JSON.parse(readFileSync(join(root, "deploy/grafana/dashboards/cellwire.json"), "utf8")), "dashboard");
  const targets = dashboardTargets(listAt(dashboard["panels"], "panels"), "panels");
  const datasources = recordAt(readYaml(root, "deploy/grafana/provisioning/datasources/prometheus.yml"), "datasources");
  const haproxyConfig = readFileSync(join(root, "deploy/haproxy/haproxy.cfg"), "utf8");
  const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
  const natsConfig = readFileSync(join(root, "config/nats/cellwire.conf"), "utf8");
  return {
    root,
    services,
    operatorEnvironment: { ...sampleOperatorEnvironment },
    imageEnvironment: Object.fromEntries(
      [...dockerfile.matchAll(/^ENV ([A-Z_][A-Z0-9_]*)=(\S+)$/gm)].map((match) => [match[1] ?? "", match[2] ?? ""]),
    ),
    natsUsers: [...natsConfig.matchAll(/\{ user: ([a-z]+), password:/g)].map((match) => match[1] ?? ""),
    scrapeJobs,
    ruleFiles,
    alerts,
    dashboardExpressions: targets.map((target) => target.expr),
    dashboardDatasourceUids: targets.map((target) => target.datasourceUid ?? "(none)"),
    provisionedDatasourceUids: listAt(datasources["datasources"], "datasources").map((source) =>
      textAt(recordAt(source, "datasource")["uid"], "datasource.uid"),
    ),
    haproxyServers: [...haproxyConfig.matchAll(/^\s*server (\S+) ([^:\s]+):(\d+)(.*)$/gm)].map((match) => ({
      name: match[1] ?? "",
      host: match[2] ?? "",
      port: match[3] ?? "",
      options: [...defaultServerOptions(haproxyConfig), ...(match[4] ?? "").trim().split(/\s+/)],
    })),
    haproxyModes: [...haproxyConfig.matchAll(/^\s*mode (\S+)/gm)].map((match) => match[1] ?? ""),
    operationsDoc: readFileSync(join(root, "docs/operations.md"), "utf8"),
  };
}

// ---- Interpolation, as compose does it ----

/**
 * `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}` and `${NAME?error}`
 * (compose's own rules); a required variable that is missing is a problem, as compose refuses to start.
 */
export function interpolate(text: string, variables: Readonly<Record<string, string>>, where: string, problems: string[]): string {
  return text.replace(
    /\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (match, braced: string | undefined, operator: string | undefined, argument: string | undefined, bare: string | undefined) => {
      if (match === "$$") return "$";
      const name = braced ?? bare ?? "";
      const value = variables[name];
      const present = operator?.startsWith(":") === true ? value !== undefined && value !== "" : value !== undefined;
      if (operator === undefined) return value ?? "";
      if (present) return value ?? "";
      if (operator.endsWith("?")) {
        problems.push(`${where}: compose refuses to start without ${name} (${argument ?? ""})`);
        return "";
      }
      return argument ?? "";
    },
  );
}

// ---- What the code reads ----

type ServiceKind = "edge" | "worker" | "directory" | "cli";

/** The process entries an image's command may name, each with the config reader its main.ts calls. */
const serviceEntries: Readonly<Record<string, { kind: Exclude<ServiceKind, "cli">; load: (environment: Environment) => unknown }>> = {
  "edge/src/main.ts": { kind: "edge", load: (environment) => loadEdgeConfig(environment) },
  "cells/src/main.ts": { kind: "worker", load: (environment) => loadWorkerConfig(environment) },
  "directory/src/main.ts": { kind: "directory", load: (environment) => loadDirectoryConfig(environment) },
};

/** What a CLI command run as a service reads: only `cellwire admin-api` runs as one. */
const cliServiceLoaders: Readonly<Record<string, (environment: Environment) => unknown>> = {
  "admin-api": (environment) => loadAdminApiConfig(environment),
};

/** Runs `load` on `environment`, recording every variable it looks up. */
export function variablesRead(load: (environment: Environment) => unknown, environment: Record<string, string>): Set<string> {
  const read = new Set<string>();
  const recording = new Proxy(environment, {
    get(target, name, receiver) {
      if (typeof name === "string") read.add(name);
      return Reflect.get(target, name, receiver) as unknown;
    },
  });
  load(recording);
  return read;
}

/**
 * Every metric name a Cellwire process registers, from the code itself: each service's registry built as
 * its start builds it (Node's defaults, the NATS connection's counters, the service's own metrics).
 */
function registeredMetricNames(): Set<string> {
  const names = new Set<string>();
  const add = (registry: { getMetricsAsArray: () => { name: string }[] }): void => {
    for (const metric of registry.getMetricsAsArray()) names.add(metric.name);
  };
  const edge = new EdgeMetrics("compose-test");
  registerNatsConnectionMetrics(edge.service.registry);
  add(edge.service.registry);
  const worker = createServiceMetrics("worker", "compose-test");
  registerNatsConnectionMetrics(worker.registry);
  createWorkerCounters(worker.registry);
  registerWorkerGauges(worker.registry, {
    ringEpoch: () => 0,
    ringMembers: () => 0,
    ownsLease: () => false,
    natsConnected: () => false,
    poolConnections: () => ({ total: 0, idle: 0, waiting: 0 }),
    outbox: () => Promise.resolve({ depth: 0, oldestAgeSeconds: 0 }),
  });
  add(worker.registry);
  const directory = createServiceMetrics("directory", "compose-test");
  registerNatsConnectionMetrics(directory.registry);
  createDirectoryMetrics(directory.registry, () => false);
  add(directory.registry);
  const admin = createServiceMetrics("admin", "compose-test");
  registerNatsConnectionMetrics(admin.registry);
  createAdminApiMetrics(admin.registry, () => 0);
  add(admin.registry);
  return names;
}

function metricNamesIn(expression: string): string[] {
  return [...expression.matchAll(/\b(cellwire_[a-z0-9_]+)\b/g)].map((match) => match[1] ?? "");
}

function isKnownMetric(name: string, known: ReadonlySet<string>): boolean {
  if (known.has(name)) return true;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return base !== name && known.has(base);
}

// ---- The checks ----

const cellwireEntryPattern = ["node", "--import", "tsx"];
const cliLauncher = "cli/bin/cellwire.js";

function imageProblem(name: string, service: ComposeService): string | undefined {
  const image = service.image;
  if (image === undefined) return `${name}: no image (a service must name the image it runs, pinned by tag)`;
  if (image.includes("@sha256:")) return undefined;
  const lastPart = image.slice(image.lastIndexOf("/") + 1);
  const colon = lastPart.indexOf(":");
  if (colon < 0) return `${name}: image ${image} has no tag, which means latest: pin it by version`;
  const tag = lastPart.slice(colon + 1);
  if (tag === "latest") return `${name}: image ${image} is latest: pin it by version`;
  // An image built from this tree is named by its tag, not fetched: its version is the commit.
  if (service.build) return undefined;
  if (!/^v?\d+\.\d+(\.\d+)?([-.+][A-Za-z0-9.-]+)?$/.test(tag))
    return `${name}: image ${image} is not pinned to a version (major.minor at least): ${tag} moves`;
  return undefined;
}

interface CellwireService {
  name: string;
  kind: ServiceKind;
  service: ComposeService;
  /** The environment the process starts with: the image's, then compose's (interpolated). */
  environment: Record<string, string>;
}

function classify(deployment: Deployment, name: string, service: ComposeService, problems: string[]): CellwireService | undefined {
  const command = service.command;
  if (service.commandIsString) {
    problems.push(`${name}: command must be a list (the exec form), not a shell string`);
    return undefined;
  }
  if (command === undefined) {
    problems.push(`${name}: a Cellwire service must say which process it runs (command)`);
    return undefined;
  }
  const environment: Record<string, string> = { ...deployment.imageEnvironment };
  for (const [variable, raw] of Object.entries(service.environment)) {
    environment[variable] = interpolate(raw, deployment.operatorEnvironment, `${name}.${variable}`, problems);
  }
  const isEntry = command.length === 4 && cellwireEntryPattern.every((part, index) => command[index] === part);
  if (isEntry) {
    const entry = serviceEntries[command[3] ?? ""];
    if (entry === undefined || !existsSync(join(deployment.root, command[3] ?? ""))) {
      problems.push(`${name}: runs ${command[3] ?? ""}, which is not a Cellwire process entry (${Object.keys(serviceEntries).join(", ")})`);
      return undefined;
    }
    return { name, kind: entry.kind, service, environment };
  }
  if (command[0] === "node" && command[1] === cliLauncher) {
    const cliCommand = command[2] ?? "";
    if (!(cliCommands as readonly string[]).includes(cliCommand)) {
      problems.push(`${name}: runs \`cellwire ${cliCommand}\`, which the CLI does not have (${cliCommands.join(", ")})`);
      return undefined;
    }
    return { name, kind: "cli", service, environment };
  }
  problems.push(`${name}: command ${JSON.stringify(command)} runs neither a Cellwire process entry nor the cellwire CLI`);
  return undefined;
}

function loaderOf(cellwire: CellwireService): (environment: Environment) => unknown {
  if (cellwire.kind === "cli") {
    const cliCommand = cellwire.service.command?.[2] ?? "";
    const load = cliServiceLoaders[cliCommand];
    if (load === undefined) throw new Error(`\`cellwire ${cliCommand}\` does not run as a service`);
    return load;
  }
  const entry = Object.values(serviceEntries).find((candidate) => candidate.kind === cellwire.kind);
  if (entry === undefined) throw new Error(`no entry for ${cellwire.kind}`);
  return entry.load;
}

function environmentProblems(cellwire: CellwireService, problems: string[]): void {
  let read: Set<string>;
  try {
    read = variablesRead(loaderOf(cellwire), cellwire.environment);
  } catch (error) {
    problems.push(`${cellwire.name}: its config refuses compose's settings: ${error instanceof Error ? error.message : String(error)}`);
    return;
  }
  for (const variable of Object.keys(cellwire.service.environment)) {
    if (!read.has(variable))
      problems.push(`${cellwire.name}: sets ${variable}, which its code does not read (a typo, or a setting of another service?)`);
  }
}

const urlProtocolsNamingServices = new Set(["postgres:", "postgresql:", "redis:", "rediss:", "nats:"]);

function wiringProblems(deployment: Deployment, cellwire: CellwireService, problems: string[]): void {
  const { name, environment, service } = cellwire;
  for (const server of (environment["CELLWIRE_NATS_SERVERS"] ?? "").split(",").filter((entry) => entry !== "")) {
    const host = server.replace(/^[a-z]+:\/\//, "").split(":")[0] ?? "";
    if (deployment.services[host] === undefined) problems.push(`${name}: CELLWIRE_NATS_SERVERS names ${host}, which is no service`);
  }
  const user = environment["CELLWIRE_NATS_USER"];
  if (user !== undefined) {
    if (!deployment.natsUsers.includes(user))
      problems.push(`${name}: CELLWIRE_NATS_USER ${user} is not a user of config/nats/cellwire.conf`);
    const password = service.environment["CELLWIRE_NATS_PASSWORD"] ?? "";
    if (!password.startsWith(`\${CELLWIRE_NATS_${user.toUpperCase()}_PASSWORD`))
      problems.push(`${name}: CELLWIRE_NATS_PASSWORD must be the ${user} user's (CELLWIRE_NATS_${user.toUpperCase()}_PASSWORD)`);
  }
  for (const [variable, value] of Object.entries(environment)) {
    // Only URLs with an authority: `nats-1:4222` also parses as a URL (scheme "nats-1:", no host).
    if (!/^[a-z]+:\/\//.test(value)) continue;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      continue;
    }
    if (urlProtocolsNamingServices.has(url.protocol) && deployment.services[url.hostname] === undefined)
      problems.push(`${name}: ${variable} names host ${url.hostname}, which is no service`);
  }
}

/** The port a Cellwire service serves /metrics on, from its own settings. */
function metricsPort(cellwire: CellwireService): string | undefined {
  if (cellwire.kind === "edge") return cellwire.environment["EDGE_PORT"] ?? "8080";
  if (cellwire.kind === "worker") return cellwire.environment["WORKER_ADMIN_PORT"];
  if (cellwire.kind === "directory") return cellwire.environment["DIRECTORY_ADMIN_PORT"];
  if (isAdminApi(cellwire)) return cellwire.environment["ADMIN_PORT"] ?? String(adminApiConfigDefaults.port);
  return undefined;
}

function isAdminApi(cellwire: CellwireService): boolean {
  return cellwire.kind === "cli" && cellwire.service.command?.[2] === "admin-api";
}

/** The secret a scraper's credentials file is, when it is one compose mounts (/run/secrets/<name>). */
const composeSecretsDirectory = "/run/secrets/";

function prometheusProblems(deployment: Deployment, cellwireServices: readonly CellwireService[], problems: string[]): void {
  const scraped = new Set<string>();
  for (const job of deployment.scrapeJobs) {
    for (const target of job.targets) {
      const [host = "", port = ""] = target.split(":");
      scraped.add(host);
      if (host === "localhost") continue;
      if (deployment.services[host] === undefined) {
        problems.push(`prometheus job ${job.name}: target ${target} is no service`);
        continue;
      }
      const cellwire = cellwireServices.find((candidate) => candidate.name === host);
      const expected = cellwire === undefined ? undefined : metricsPort(cellwire);
      if (expected !== undefined && expected !== port)
        problems.push(`prometheus job ${job.name}: ${host} serves /metrics on ${expected}, not ${port}`);
      if (cellwire !== undefined && isAdminApi(cellwire)) problems.push(...adminScrapeProblems(deployment, job, host));
    }
  }
  for (const cellwire of cellwireServices) {
    if (metricsPort(cellwire) !== undefined && cellwire.service.profiles.length === 0 && !scraped.has(cellwire.name))
      problems.push(`prometheus: ${cellwire.name} is scraped by no job`);
  }
  for (const file of deployment.ruleFiles) {
    if (!existsSync(join(deployment.root, "deploy/prometheus", file))) problems.push(`prometheus: rule file ${file} does not exist`);
  }
}

/** The admin API's /metrics takes a bearer token: the job must read one from a secret compose gives Prometheus. */
function adminScrapeProblems(deployment: Deployment, job: ScrapeJob, host: string): string[] {
  const file = job.credentialsFile;
  if (file === undefined)
    return [
      `prometheus job ${job.name}: ${host}'s /metrics needs a bearer token (authorization.credentials_file), or every scrape is refused`,
    ];
  const secret = file.startsWith(composeSecretsDirectory) ? file.slice(composeSecretsDirectory.length) : undefined;
  if (secret === undefined || !(deployment.services["prometheus"]?.secrets ?? []).includes(secret))
    return [`prometheus job ${job.name}: its credentials file ${file} is no secret compose gives the prometheus service`];
  return [];
}

function expressionProblems(where: string, expression: string, knownMetrics: ReadonlySet<string>, jobs: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  for (const metric of metricNamesIn(expression)) {
    if (!isKnownMetric(metric, knownMetrics)) problems.push(`${where}: ${metric} is not a metric Cellwire exports`);
  }
  for (const match of expression.matchAll(/\bjob=~?"([^"]*)"/g)) {
    for (const job of (match[1] ?? "").split("|")) {
      if (!jobs.has(job)) problems.push(`${where}: job ${job} is not a scrape job of deploy/prometheus/prometheus.yml`);
    }
  }
  if (expression.includes("cellwire_edge_errors_sent_total")) {
    for (const match of expression.matchAll(/\bcode=~?"([^"]*)"/g)) {
      for (const code of (match[1] ?? "").split("|")) {
        if (!(errorCodeList as readonly string[]).includes(code))
          problems.push(`${where}: ${code} is not an error code (protocol/src/codes.ts)`);
      }
    }
  }
  return problems;
}

function alertProblems(deployment: Deployment, knownMetrics: ReadonlySet<string>, problems: string[]): void {
  const jobs = new Set(deployment.scrapeJobs.map((job) => job.name));
  const seen = new Set<string>();
  if (deployment.alerts.length === 0) problems.push("alerts: no rules");
  for (const rule of deployment.alerts) {
    if (seen.has(rule.alert)) problems.push(`alert ${rule.alert}: named twice`);
    seen.add(rule.alert);
    if (rule.severity !== "page" && rule.severity !== "ticket") problems.push(`alert ${rule.alert}: severity must be page or ticket`);
    if (rule.summary === undefined) problems.push(`alert ${rule.alert}: no summary`);
    problems.push(...expressionProblems(`alert ${rule.alert}`, rule.expr, knownMetrics, jobs));
    // docs/operations.md lists the same rules: an operator reads the PromQL there.
    if (!deployment.operationsDoc.includes(rule.alert) || !deployment.operationsDoc.includes(rule.expr))
      problems.push(`alert ${rule.alert}: docs/operations.md does not list it with its expression as in the rules file`);
  }
}

/** The options of haproxy.cfg's `default-server` lines, which every `server` line after them takes. */
function defaultServerOptions(haproxyConfig: string): string[] {
  return [...haproxyConfig.matchAll(/^\s*default-server (.*)$/gm)].flatMap((match) => (match[1] ?? "").trim().split(/\s+/));
}

function dashboardProblems(deployment: Deployment, knownMetrics: ReadonlySet<string>, problems: string[]): void {
  const jobs = new Set(deployment.scrapeJobs.map((job) => job.name));
  if (deployment.dashboardExpressions.length === 0) problems.push("dashboard: no queries");
  deployment.dashboardExpressions.forEach((expression, index) => {
    problems.push(...expressionProblems(`dashboard query ${index + 1}`, expression, knownMetrics, jobs));
  });
  for (const uid of new Set(deployment.dashboardDatasourceUids)) {
    if (!deployment.provisionedDatasourceUids.includes(uid)) problems.push(`dashboard: data source ${uid} is not provisioned`);
  }
}

function balancerProblems(deployment: Deployment, cellwireServices: readonly CellwireService[], problems: string[]): void {
  const edges = cellwireServices.filter((cellwire) => cellwire.kind === "edge" && cellwire.service.profiles.length === 0);
  for (const server of deployment.haproxyServers) {
    const edge = edges.find((candidate) => candidate.name === server.host);
    if (edge === undefined) problems.push(`haproxy: server ${server.name} points at ${server.host}, which is no edge`);
    else if (metricsPort(edge) !== server.port)
      problems.push(`haproxy: ${server.host} listens on ${metricsPort(edge) ?? "?"}, not ${server.port}`);
    if (!server.options.includes("send-proxy-v2"))
      problems.push(`haproxy: server ${server.name} sends no PROXY v2 header (send-proxy-v2), so its edge counts every client as haproxy`);
  }
  // In TCP mode a client's own bytes reach the edge, whose uWS reads a PROXY header before every request of a
  // connection: after one plain request, a client could name any address (edge/src/proxy-protocol.integration.test.ts).
  for (const mode of deployment.haproxyModes) {
    if (mode !== "http")
      problems.push(`haproxy: mode ${mode} passes clients' bytes to the edges, which would let a client name its own address`);
  }
  const balancer = deployment.services["haproxy"];
  for (const edge of edges) {
    if (!deployment.haproxyServers.some((server) => server.host === edge.name))
      problems.push(`haproxy: edge ${edge.name} is in no backend`);
    const trusted = (edge.environment["EDGE_TRUSTED_PROXIES"] ?? "").split(",").map((entry) => entry.trim());
    if (balancer?.ipv4Address === undefined || !trusted.includes(balancer.ipv4Address))
      problems.push(
        `${edge.name}: EDGE_TRUSTED_PROXIES must name haproxy's address, or its PROXY header is ignored and every client counts as haproxy`,
      );
  }
}

function serviceProblems(deployment: Deployment, name: string, service: ComposeService, problems: string[]): void {
  const problem = imageProblem(name, service);
  if (problem !== undefined) problems.push(problem);
  for (const volume of service.volumes) {
    const source = volume.split(":")[0] ?? "";
    if (source.startsWith("./") && !existsSync(join(deployment.root, source)))
      problems.push(`${name}: mounts ${source}, which does not exist`);
  }
  for (const dependency of service.dependsOn) {
    const target = deployment.services[dependency];
    if (target === undefined) problems.push(`${name}: depends on ${dependency}, which is no service`);
    else if (service.profiles.length === 0 && target.profiles.length > 0)
      problems.push(`${name}: depends on ${dependency}, which runs only in profile ${target.profiles.join(", ")}`);
  }
}

/** Every way compose.yaml and the files it names disagree with the code or each other; empty when sound. */
export function deploymentProblems(deployment: Deployment): string[] {
  const problems: string[] = [];
  const cellwireServices: CellwireService[] = [];
  for (const [name, service] of Object.entries(deployment.services)) {
    serviceProblems(deployment, name, service, problems);
    if (!service.build && service.image !== "cellwire:local") continue;
    const cellwire = classify(deployment, name, service, problems);
    if (cellwire === undefined) continue;
    cellwireServices.push(cellwire);
    environmentProblems(cellwire, problems);
    wiringProblems(deployment, cellwire, problems);
  }
  const knownMetrics = registeredMetricNames();
  prometheusProblems(deployment, cellwireServices, problems);
  alertProblems(deployment, knownMetrics, problems);
  dashboardProblems(deployment, knownMetrics, problems);
  balancerProblems(deployment, cellwireServices, problems);
  return problems;
}
