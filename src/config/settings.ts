// The settings, declared once: one table per section, from which the Config type, the defaults,
// validation (./validate.ts), the environment overrides (./load.ts), the diff's key names
// (./diff.ts) and the reference (docs/settings.md, scripts/settings-doc.ts) are all read. Pure.

import type { Cidr, HostPort } from './address';
import type { StepText } from './step-text';

export const ALGORITHMS = [
  'round_robin',
  'weighted_round_robin',
  'least_connections',
  'fastest_response',
  'adaptive',
  'consistent_hash',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** What consistent_hash hashes: the client's IP, or the TLS server name read from the ClientHello. */
export const HASH_KEYS = ['source_ip', 'sni'] as const;

/** One certificate of a [tls] table: the PEM files of the certificate (and its chain) and its key. */
export interface CertificateFiles {
  readonly cert: string;
  readonly key: string;
}

export interface RateLimit {
  readonly count: number;
  readonly perMs: number;
  readonly text: string;
}

// ---------------------------------------------------------------------------------------------
// The tables. A row is one key of the file, named as the file spells it, and says:
//   prop         the property it becomes in Config (`parsed`: a second one with the parsed address)
//   kind         how it is read and checked, with its default (`def`) and range (`min`, `max`, …)
//   env          the LEMONADE_LB_* variable that overrides it, if any (integers for int/duration)
//   doc          its line in the reference (docs/settings.md; `shown`: the default as the
//                reference writes it, where the value alone does not say it)
//   secret       never shown: logs, diffs, /status, the shown hash
//   overridable  a [[services]] entry may set its own value, defaulting to this one
// Adding a key is one row here; `npm run docs:settings` writes its line in docs/settings.md.

export type Row = {
  readonly prop: string;
  readonly doc: string;
  readonly env?: string;
  readonly shown?: string;
  readonly secret?: true;
  readonly overridable?: true;
} & (
  | { readonly kind: 'int'; readonly def: number; readonly min: number; readonly max?: number }
  | { readonly kind: 'duration'; readonly def: number; readonly zeroOk?: boolean; readonly maxMs?: number }
  | { readonly kind: 'enum'; readonly def: string; readonly values: readonly string[] }
  | { readonly kind: 'string'; readonly def: string }
  | { readonly kind: 'listen'; readonly def: string | null; readonly emptyOk: boolean; readonly parsed: string }
  | { readonly kind: 'address'; readonly def: null }
  | { readonly kind: 'cidrs' }
  /** host names, lower case; `wildcard`: a leading `*.` is allowed */
  | { readonly kind: 'hosts'; readonly wildcard?: true }
  | { readonly kind: 'servers' }
  | { readonly kind: 'rate'; readonly def: string }
  | { readonly kind: 'bool'; readonly def: boolean }
  | { readonly kind: 'fraction'; readonly def: number }
  /** bytes written with escapes (./step-text.ts) */
  | { readonly kind: 'bytes'; readonly def: '' }
  | { readonly kind: 'regex'; readonly def: '' }
  /** send_expect steps: an array of tables of `send`, `expect`, `expect_regex` */
  | { readonly kind: 'steps' }
  /** TLS certificates: an array of tables `{ cert, key }`, each a file path */
  | { readonly kind: 'certificates' }
  /** an array of non-empty strings (ALPN protocol names) */
  | { readonly kind: 'strings' }
);

export const SCHEMA = {
  runtime: {
    metrics_cap: { prop: 'metricsCap', kind: 'int', def: 10000, min: 1, env: 'LEMONADE_LB_METRICS_CAP', doc: 'accepted and checked (> 0), with no effect: metrics are counters and fixed-bucket histograms, and per-backend series follow the live backends, so no metric buffer grows with traffic' },
    health_cap: { prop: 'healthCap', kind: 'int', def: 1000, min: 1, env: 'LEMONADE_LB_HEALTH_CAP', doc: 'health, reload and admin events kept for `/events` and the status page (> 0)' },
    drain_timeout_millis: { prop: 'drainTimeoutMs', kind: 'duration', def: 30000, env: 'LEMONADE_LB_DRAIN_TIMEOUT_MS', doc: 'how long draining connections may live (shutdown, removed backends)' },
    background_timeout_millis: { prop: 'backgroundTimeoutMs', kind: 'duration', def: 60000, env: 'LEMONADE_LB_BACKGROUND_TIMEOUT_MS', doc: 'how long background tasks (health, watcher, admin) get to stop' },
    accept_timeout_millis: { prop: 'acceptTimeoutMs', kind: 'duration', def: 120000, env: 'LEMONADE_LB_ACCEPT_TIMEOUT_MS', doc: 'hard bound on the whole shutdown; past it the process exits 1' },
    config_watch_interval_millis: { prop: 'configWatchIntervalMs', kind: 'duration', def: 5000, env: 'LEMONADE_LB_CONFIG_WATCH_INTERVAL_MS', doc: 'the file is also polled this often (a safety net for missed events)' },
    workers: { prop: 'workers', kind: 'int', def: 1, min: 0, max: 256, env: 'LEMONADE_LB_WORKERS', doc: 'data-plane processes; 0 = one per CPU. 1 is the single process. Read at start: a reload that changes it applies the rest and says the number stays until a restart. See *Several worker processes* below' },
  },
  proxy: {
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: null, emptyOk: true, env: 'LEMONADE_LB_LISTEN_ADDRESS', doc: '`host:port` of the `default` service; IPv6 as `"[::]:8080"`; ports 1-65535. Required with top-level `[[backends]]`' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 100000, min: 1, env: 'LEMONADE_LB_MAX_CONNECTIONS', doc: 'concurrent client connections; the next one is closed at once and counted' },
    connect_timeout: { prop: 'connectTimeoutMs', kind: 'duration', def: 3000, overridable: true, doc: 'connect to a backend' },
    idle_timeout: { prop: 'idleTimeoutMs', kind: 'duration', def: 3600000, overridable: true, doc: 'a connection with no bytes either way for this long is closed' },
    tcp_keepalive: { prop: 'tcpKeepaliveMs', kind: 'duration', def: 0, zeroOk: true, maxMs: 32767000, overridable: true, doc: 'TCP keepalive on both sockets of a connection, the client\'s and the backend\'s: `"0s"` = off; a duration turns `SO_KEEPALIVE` on with that idle time before the first probe, rounded up to whole seconds (the kernel\'s unit: `"500ms"` is 1 s), at most `"32767s"` (Linux\'s bound); then libuv has the probes sent 1 s apart and the connection given up after 10 unanswered (it ends as a reset). It finds peers gone without a word (NAT and firewall state lost) on quiet long connections; `idle_timeout` still applies' },
    connect_retries: { prop: 'connectRetries', kind: 'int', def: 2, min: 0, max: 100, overridable: true, doc: 'other backends tried when a connect fails before any byte flowed' },
    proxy_protocol: { prop: 'proxyProtocol', kind: 'enum', def: 'off', values: ['off', 'v1', 'v2'], overridable: true, doc: '`"off"`, `"v1"` or `"v2"`: the PROXY protocol header sent to backends, on proxied connections and on health checks (see **Health**)' },
    accept_proxy: { prop: 'acceptProxy', kind: 'enum', def: 'off', values: ['off', 'v1', 'v2', 'any'], overridable: true, doc: '`"off"`, `"v1"`, `"v2"` or `"any"`: read a PROXY protocol header a balancer in front sends first, and take its client address for everything (see [Behind another balancer](behaviour.md#behind-another-balancer-inbound-proxy-protocol)); a connection without a valid one within `inspect_timeout` is refused (`rejected_proxy_header`). Services sharing an address must agree on it' },
    accept_proxy_from: { prop: 'acceptProxyFrom', kind: 'cidrs', overridable: true, doc: 'with `accept_proxy`: the peers trusted to send the header (CIDRs, as `allow`); required, `["0.0.0.0/0", "::/0"]` trusts every peer. Services sharing an address must agree on it' },
    allow: { prop: 'allow', kind: 'cidrs', overridable: true, doc: 'client CIDRs allowed (`"10.0.0.0/8"`, `"::1"`); empty = all' },
    deny: { prop: 'deny', kind: 'cidrs', overridable: true, doc: 'client CIDRs refused, checked after `allow`' },
    client_rate_limit: { prop: 'clientRateLimit', kind: 'rate', def: '', overridable: true, doc: 'new connections per client address, `"100/s"`, `"600/m"`, `"1000/h"`; `""` = off' },
    client_max_connections: { prop: 'clientMaxConnections', kind: 'int', def: 0, min: 0, overridable: true, doc: 'concurrent connections per client address; 0 = off' },
    queue_timeout: { prop: 'queueTimeoutMs', kind: 'duration', def: 0, zeroOk: true, overridable: true, doc: 'when every usable backend is at its `max_connections`, a new connection waits up to this long for a slot, first come first served, instead of being refused (see [A queue at the cap](behaviour.md#a-queue-at-the-cap)); past it, it ends as `queue_timeout`. `"0s"` = off: refused at once (`no_backend`). TCP only' },
    queue_max: { prop: 'queueMax', kind: 'int', def: 1000, min: 1, max: 1_000_000, overridable: true, doc: 'with `queue_timeout`: connections waiting at once (per worker process); one more is refused at once (`no_backend`)' },
    inspect_timeout: { prop: 'inspectTimeoutMs', kind: 'duration', def: 5000, overridable: true, doc: 'on an address that reads the TLS ClientHello (see [SNI routing](behaviour.md#sni-routing-tls-passthrough)): a client that has not sent a whole one in this time (or within 16 KiB) is routed as having no server name. Services sharing an address must agree on it' },
    protocol: { prop: 'protocol', kind: 'enum', def: 'tcp', values: ['tcp', 'udp'], overridable: true, doc: '`"tcp"` or `"udp"`: a UDP service relays datagrams, one flow per client address and port (see [UDP services](behaviour.md#udp-services)); it has its listen address to itself' },
    udp_idle_timeout: { prop: 'udpIdleTimeoutMs', kind: 'duration', def: 30000, overridable: true, doc: 'UDP only: a flow with no datagram either way for this long ends (`udp_idle`)' },
    udp_responses: { prop: 'udpResponses', kind: 'int', def: 0, min: 0, max: 1_000_000, overridable: true, doc: 'UDP only: a flow ends once it has had this many datagrams back for each datagram in (`udp_responses`, as nginx\'s `proxy_responses`); 0 = no bound (DNS: 1)' },
    udp_affinity: { prop: 'udpAffinity', kind: 'enum', def: 'flow', values: ['flow', 'quic'], overridable: true, doc: 'UDP only: what keeps datagrams on one backend: `"flow"` (the client\'s address and port) or `"quic"` (also the QUIC connection IDs the backends choose, so that a client whose address changes keeps its connection and backend; see [QUIC](behaviour.md#quic-connection-ids))' },
  },
  strategy: {
    algorithm: { prop: 'algorithm', kind: 'enum', def: 'adaptive', values: ALGORITHMS, env: 'LEMONADE_LB_STRATEGY', overridable: true, doc: '`round_robin`, `weighted_round_robin`, `least_connections`, `fastest_response`, `adaptive`, `consistent_hash` (hyphenated spellings and `fastest_response_time` accepted; so is a top-level `strategy = "…"` key as older lemonade files have it)' },
    hash_key: { prop: 'hashKey', kind: 'enum', def: 'source_ip', values: HASH_KEYS, overridable: true, doc: '`consistent_hash`\'s key: `"source_ip"` (the client\'s IP address) or `"sni"` (the TLS server name from the ClientHello, which makes the listener read it; no name hashes as `""`)' },
    hash_balance_factor: { prop: 'hashBalanceFactor', kind: 'int', def: 0, min: 0, max: 100000, overridable: true, doc: '`consistent_hash`: 0 = off, else a percentage >= 100: a backend above that share of the mean active connections takes no new ones (its keys go to the next in their preference order)' },
  },
  backends: {
    id: { prop: 'id', kind: 'int', def: -1, min: 0, max: 2 ** 31 - 1, shown: 'its index', doc: 'integer, unique: the identity kept across reloads' },
    name: { prop: 'name', kind: 'string', def: '', shown: '`backend-<id+1>`', doc: 'unique; shown in metrics, logs and the admin API' },
    address: { prop: 'address', kind: 'address', def: null, shown: '(required, or `srv`)', doc: '`host:port`; a host name is looked up off the connect path and cached for its TTL (see [DNS discovery](behaviour.md#dns-discovery))' },
    resolve: { prop: 'resolve', kind: 'enum', def: 'none', values: ['none', 'dns'], doc: '`"dns"`: the host name of `address` becomes one endpoint per A/AAAA record, `PARENT/IP:PORT`, followed as its records change; `"none"`: one backend, connected to at the name\'s cached addresses (tried in order)' },
    srv: { prop: 'srv', kind: 'string', def: '', doc: 'an SRV name (`"_pg._tcp.db.internal"`) instead of `address`: one endpoint per address of the lowest-priority targets, with their ports and weights' },
    weight: { prop: 'weight', kind: 'int', def: 1, min: 0, max: 1_000_000, doc: 'integer >= 0; 0 takes no new connections' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 0, min: 0, doc: 'per-backend cap, 0 = unlimited; a full backend is skipped' },
    backup: { prop: 'backup', kind: 'bool', def: false, doc: 'used only when no primary backend is usable' },
  },
  health: {
    interval: { prop: 'intervalMs', kind: 'duration', def: 10000, env: 'LEMONADE_LB_HEALTH_INTERVAL_MS', overridable: true, doc: 'active check period per backend (jittered ±10 %)' },
    timeout: { prop: 'timeoutMs', kind: 'duration', def: 3000, env: 'LEMONADE_LB_HEALTH_TIMEOUT_MS', overridable: true, doc: 'bound on one check' },
    kind: { prop: 'kind', kind: 'enum', def: 'tcp', values: ['tcp', 'http', 'send_expect'], overridable: true, doc: '`"tcp"` (connect), `"http"` (GET `path`; 2xx/3xx is healthy) or `"send_expect"` (`send`, then the reply must match `expect` or `expect_regex`; or `steps`)' },
    port: { prop: 'port', kind: 'int', def: 0, min: 0, max: 65535, overridable: true, doc: "the port checks connect to; 0 = the backend's own (e.g. Patroni's REST port 8008 for an http check of `/primary`)" },
    path: { prop: 'path', kind: 'string', def: '/health', overridable: true, doc: 'path of the http check' },
    send: { prop: 'send', kind: 'bytes', def: '', overridable: true, doc: 'send_expect: bytes sent once connected; escapes `\\r \\n \\t \\\\ \\xNN` (write them in a literal string `\'…\'`, or let a TOML basic string `"…\\r\\n"` make the characters)' },
    expect: { prop: 'expect', kind: 'bytes', def: '', overridable: true, doc: 'send_expect: the reply must contain these bytes (same escapes); read within `timeout`, at most 64 KiB' },
    expect_regex: { prop: 'expectRegex', kind: 'regex', def: '', overridable: true, doc: 'send_expect: instead of `expect`, a regular expression in RE2 syntax (no backreferences or lookaround; see [send_expect](behaviour.md#checks-that-speak-the-protocol-kind--send_expect)) the reply (as UTF-8 text) must match; checked at load' },
    steps: { prop: 'steps', kind: 'steps', shown: '`[]`', overridable: true, doc: 'send_expect: several exchanges in order, `[{ send = "…", expect = "…" }, …]` (each with `send`, `expect` or `expect_regex`; at most 16), instead of the three keys above; the whole check within `timeout`' },
    healthy_threshold: { prop: 'healthyThreshold', kind: 'int', def: 2, min: 1, max: 1000, overridable: true, doc: 'consecutive successes to come back' },
    unhealthy_threshold: { prop: 'unhealthyThreshold', kind: 'int', def: 3, min: 1, max: 1000, overridable: true, doc: 'consecutive failures to go down (also: consecutive failed connects on live traffic before a passive ejection)' },
    slow_start: { prop: 'slowStartMs', kind: 'duration', def: 0, zeroOk: true, overridable: true, doc: 'a backend coming back ramps its weight from 5 % to 100 % over this time; 0 = off' },
    agent_port: { prop: 'agentPort', kind: 'int', def: 0, min: 0, max: 65535, overridable: true, doc: "agent check: the port of the backend's agent, which answers one line (`up`, `down`, `drain`, `ready`, `maint`, `NN%`; see **Agent checks**); 0 = off" },
    agent_interval: { prop: 'agentIntervalMs', kind: 'duration', def: 0, zeroOk: true, shown: '`interval`', overridable: true, doc: "period of the agent check (jittered ±10 %), each bounded by `timeout`; 0 = the health `interval`" },
  },
  dns: {
    servers: { prop: 'servers', kind: 'servers', shown: "`[]` (the system's)", doc: 'DNS servers for `resolve = "dns"`, `srv` and the TTL of cached names, `"ip"` or `"ip:port"` (`"[::1]:53"`); empty = those of `/etc/resolv.conf`' },
    min_ttl: { prop: 'minTtlMs', kind: 'duration', def: 1000, doc: 'a name is looked up again no sooner than this after an answer, whatever its TTL (also the retry delay after a failed lookup)' },
    max_ttl: { prop: 'maxTtlMs', kind: 'duration', def: 300000, doc: 'and no later than this (>= `min_ttl`)' },
    timeout: { prop: 'timeoutMs', kind: 'duration', def: 2000, doc: 'bound on one DNS query attempt (two attempts per lookup)' },
    family: { prop: 'family', kind: 'enum', def: 'any', values: ['any', 'ipv4', 'ipv6'], doc: 'the address records asked for: `"any"` (A and AAAA; one that fails or times out keeps what the other gave), `"ipv4"` (A only, as nginx\'s `ipv6=off`) or `"ipv6"` (AAAA only); for SRV targets and cached host names too' },
    max_endpoints: { prop: 'maxEndpoints', kind: 'int', def: 64, min: 1, max: 4096, doc: 'endpoints taken from one name\'s answer (the first by address; the rest are reported and not used)' },
  },
  services: {
    name: { prop: 'name', kind: 'string', def: '', shown: '(required)', doc: 'unique, 1-64 of `[A-Za-z0-9._-]`; `default` is the service the top-level `[proxy]` and `[[backends]]` make' },
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: null, emptyOk: false, doc: '`host:port` this service listens on; services may share one when told apart by `sni`' },
    sni: { prop: 'sni', kind: 'hosts', wildcard: true, doc: 'TLS server names this service takes on its address, `["api.example.com", "*.example.org"]` (a wildcard matches one or more labels before); `[]` = the address\'s default route. See [SNI routing](behaviour.md#sni-routing-tls-passthrough)' },
    max_connections: { prop: 'maxConnections', kind: 'int', def: 0, min: 0, doc: "this service's concurrent client connections; 0 = only `proxy.max_connections`, the cap over all services" },
  },
  tls: {
    certificates: { prop: 'certificates', kind: 'certificates', shown: '`[]`', doc: 'terminate TLS: `[{ cert = "/etc/lemonade/tls/a.pem", key = "/etc/lemonade/tls/a.key" }, …]`, PEM files (a chain after the certificate may follow in `cert`); the client\'s server name chooses the certificate whose names (DNS SANs, else CN) match it, exactly then by wildcard; the first is the default. Top-level `[tls]` is the `default` service\'s, `[services.tls]` a service\'s own (not inherited). The files are read at every load and reload and watched. See [TLS termination](behaviour.md#tls-termination)' },
    min_version: { prop: 'minVersion', kind: 'enum', def: 'TLSv1.2', values: ['TLSv1.2', 'TLSv1.3'], doc: 'the oldest TLS version accepted from clients' },
    alpn: { prop: 'alpn', kind: 'strings', shown: '`[]`', doc: 'ALPN protocols offered, in order of preference, e.g. `["h2", "http/1.1"]`; `[]` = none' },
    client_ca: { prop: 'clientCa', kind: 'string', def: '', doc: 'PEM file of the CAs client certificates must chain to; set = client certificates are asked for' },
    client_auth: { prop: 'clientAuth', kind: 'enum', def: 'none', values: ['none', 'optional', 'required'], doc: '`"required"` refuses a handshake without a certificate chaining to `client_ca`; `"optional"` asks and accepts none; both need `client_ca`' },
    handshake_timeout: { prop: 'handshakeTimeoutMs', kind: 'duration', def: 10000, doc: 'a client that has not completed its TLS handshake in this time is cut (`tls_handshake_timeout`)' },
  },
  backend_tls: {
    enabled: { prop: 'enabled', kind: 'bool', def: false, doc: 'originate TLS: the balancer speaks TLS to the backends (connections and health checks). Top-level `[backend_tls]` is the `default` service\'s, `[services.backend_tls]` a service\'s own (not inherited). The files are read at every load and reload and watched. See [TLS to backends](behaviour.md#tls-to-backends)' },
    ca: { prop: 'ca', kind: 'string', def: '', doc: 'PEM file of the CAs a backend\'s certificate must chain to; `""` = the system\'s trust store' },
    verify: { prop: 'verify', kind: 'bool', def: true, doc: 'verify the backend\'s certificate (its chain and its name); `false` accepts any, with a warning in `--validate` and the start log' },
    server_name: { prop: 'serverName', kind: 'string', def: '', doc: 'the name sent in SNI and verified in the certificate; `""` = the backend address\'s host when it is a name (an IP address is sent no SNI and is verified against the certificate\'s IP addresses)' },
    cert: { prop: 'cert', kind: 'string', def: '', doc: 'a PEM client certificate file (the chain after it), for backends that ask; set with `key`' },
    key: { prop: 'key', kind: 'string', def: '', doc: 'the PEM private key file of `cert` (unencrypted; it must match the certificate). A secret: its contents appear nowhere, its path may' },
  },
  tls_tickets: {
    key_file: { prop: 'keyFile', kind: 'string', def: '', doc: 'the session ticket key every terminating service uses, shared by the balancers that read the same file (a keepalived pair, an ECMP fleet), so a session resumes on whichever node the client reaches: base64 keys of 48 bytes one per line as HAProxy\'s `tls-ticket-keys` (`openssl rand -base64 48`; `#` comments; of several, the next-to-last is used), or 48 raw bytes as nginx\'s `ssl_session_ticket_key`; read at every load and reload and watched; `""` = a random key made at start, shared by the worker processes and replaced every 12 hours. The file is a secret: its contents appear nowhere, its path may. See [Session resumption](behaviour.md#session-resumption)' },
  },
  metrics: {
    interval: { prop: 'intervalMs', kind: 'duration', def: 30000, env: 'LEMONADE_LB_METRICS_INTERVAL_MS', doc: 'period of the summary log line' },
  },
  access_log: {
    enabled: { prop: 'enabled', kind: 'bool', def: false, doc: 'one line per client connection when it ends, rejected ones included (see [Access log](operations.md#access-log)); turning it on or off applies at once on a reload' },
    path: { prop: 'path', kind: 'string', def: '', doc: '`""` = standard output (journald); else a file, appended to and reopened on `SIGUSR1` (logrotate); a new path applies at once on a reload' },
    format: { prop: 'format', kind: 'enum', def: 'json', values: ['json', 'text'], doc: '`"json"` (one object per line) or `"text"` (one human line in the spirit of HAProxy\'s tcplog)' },
    sample: { prop: 'sample', kind: 'fraction', def: 1, shown: '1.0', doc: 'fraction of connections logged, 0 < sample <= 1 (the termination counts always count every connection)' },
  },
  admin: {
    listen_address: { prop: 'listenAddress', parsed: 'listen', kind: 'listen', def: '127.0.0.1:9090', emptyOk: true, env: 'LEMONADE_LB_ADMIN_ADDRESS', doc: 'the admin API; `""` disables it' },
    token: { prop: 'token', kind: 'string', def: '', secret: true, doc: 'if set, mutating endpoints require `Authorization: Bearer TOKEN`; if empty, they are accepted from loopback peers only' },
    // read lower case, without a trailing dot
    allowed_hosts: { prop: 'allowedHosts', kind: 'hosts', doc: 'host names the admin API answers to besides IP addresses and `localhost` (the `Host` header\'s name, case-insensitive, port ignored), e.g. `["lb1.example.com"]`; see [Admin API](admin-api.md)' },
    tls_cert: { prop: 'tlsCert', kind: 'string', def: '', doc: 'a PEM certificate file (the chain after it): set with `tls_key`, the admin API speaks HTTPS only; both files are read at load and on every reload, watched like the file itself (see [Over TLS](admin-api.md#over-tls))' },
    tls_key: { prop: 'tlsKey', kind: 'string', def: '', doc: 'the PEM private key file of `tls_cert` (unencrypted; it must match the certificate). A secret: its contents appear nowhere, its path may' },
  },
} as const satisfies Record<string, Record<string, Row>>;

export type SectionName = keyof typeof SCHEMA;
export const SECTIONS = Object.keys(SCHEMA) as SectionName[];

// ---------------------------------------------------------------------------------------------
// The Config type, read from the tables: each row gives `prop` (and `parsed`) with its kind's type.

type ValueOf<R> = R extends { kind: 'int' | 'duration' }
  ? number
  : R extends { kind: 'enum'; values: readonly (infer V)[] }
    ? V
    : R extends { kind: 'string' | 'listen' | 'address' }
      ? string
      : R extends { kind: 'bool' }
        ? boolean
        : R extends { kind: 'fraction' }
          ? number
        : R extends { kind: 'cidrs' }
          ? readonly Cidr[]
          : R extends { kind: 'hosts' | 'servers' }
            ? readonly string[]
            : R extends { kind: 'rate' }
              ? RateLimit | null
              : R extends { kind: 'bytes' | 'regex' }
                ? string
                : R extends { kind: 'steps' }
                  ? readonly StepText[]
                  : R extends { kind: 'certificates' }
                    ? readonly CertificateFiles[]
                    : R extends { kind: 'strings' }
                      ? readonly string[]
                      : never;

type Flat<T> = { [K in keyof T]: T[K] } & {};

/** One section's values; an `address` row also gives the parsed `host` and `port`. */
type Values<T> = Flat<
  { readonly [K in keyof T as T[K] extends { prop: infer P extends string } ? P : never]: ValueOf<T[K]> } & {
    readonly [K in keyof T as T[K] extends { parsed: infer P extends string } ? P : never]: T[K] extends { emptyOk: true } ? HostPort | null : HostPort;
  } & ([Extract<T[keyof T], { kind: 'address' }>] extends [never] ? unknown : { readonly host: string; readonly port: number })
>;

/** The keys a [[services]] entry may set for itself (marked `overridable`), by section. */
type Overridable<T> = { [K in keyof T as T[K] extends { overridable: true } ? K : never]: T[K] };

/** Sections of one key whose value stands for the whole section in Config: `config.strategy`. */
const FLAT = ['strategy'] as const satisfies readonly SectionName[];
export const isFlat = (s: SectionName): boolean => (FLAT as readonly string[]).includes(s);

type Schema = typeof SCHEMA;
export type BackendConfig = Values<Schema['backends']>;

/** A service's TLS termination: its [services.tls] table (the default service's: top-level [tls]). */
export type TlsConfig = Values<Schema['tls']>;

/** A service's TLS to its backends: its [services.backend_tls] table (the default service's: top-level [backend_tls]). */
export type BackendTlsConfig = Values<Schema['backend_tls']>;

/** One service: a listener address and a pool, with its [proxy] and [health] settings resolved. */
export type ServiceConfig = Values<Schema['services']> &
  Values<Overridable<Schema['strategy']>> & {
    readonly proxy: Values<Overridable<Schema['proxy']>>;
    readonly health: Values<Schema['health']>;
    /** null: the service does not terminate TLS (it relays bytes as they come) */
    readonly tls: TlsConfig | null;
    /** null: the service speaks plaintext to its backends (no table, or enabled = false) */
    readonly backendTls: BackendTlsConfig | null;
    readonly backends: readonly BackendConfig[];
  };

/** The sections that are lists of tables: [[backends]] and [[services]]. */
export const LISTS = ['backends', 'services'] as const satisfies readonly SectionName[];
export const isList = (s: SectionName): boolean => (LISTS as readonly string[]).includes(s);

/**
 * Every section's values; [[backends]] is a list of them. `services` holds every service, the
 * one named `default` (top-level [proxy] and [[backends]], when there are backends) first.
 */
export type Config = {
  readonly [S in SectionName]: S extends 'backends'
    ? readonly BackendConfig[]
    : S extends 'services'
      ? readonly ServiceConfig[]
      : S extends (typeof FLAT)[number]
        ? ValueOf<Schema[S][keyof Schema[S] & 'algorithm']>
        : Values<Schema[S]>;
};

/** The name of the service the top-level [proxy], [strategy], [health] and [[backends]] make. */
export const DEFAULT_SERVICE = 'default';

/** The default service's algorithm, or null when the file has none (only [[services]]). */
export function defaultAlgorithm(config: Config): Algorithm | null {
  return config.services.find((s) => s.name === DEFAULT_SERVICE)?.algorithm ?? null;
}

export type ProxyProtocol = Config['proxy']['proxyProtocol'];
export type HealthKind = Config['health']['kind'];

const ROWS = new Map(SECTIONS.map((s) => [s, Object.entries(SCHEMA[s] as Record<string, Row>)]));
export const KEYS = new Map(SECTIONS.map((s) => [s, Object.keys(SCHEMA[s])]));
export const rows = (s: SectionName): readonly [string, Row][] => ROWS.get(s)!;

/** The overridable rows of [proxy], [strategy] and [health]: what a [[services]] entry may set. */
export const OVERRIDABLE = {
  proxy: rows('proxy').filter(([, r]) => r.overridable === true),
  strategy: rows('strategy').filter(([, r]) => r.overridable === true),
  health: rows('health').filter(([, r]) => r.overridable === true),
};

/** The settings overridden by a LEMONADE_LB_* variable, in table order. */
export const ENV_SETTINGS: readonly { readonly name: string; readonly section: SectionName; readonly key: string; readonly kind: 'int' | 'string' }[] = SECTIONS.flatMap((section) =>
  rows(section).flatMap(([key, r]) => (r.env === undefined ? [] : [{ name: r.env, section, key, kind: r.kind === 'int' || r.kind === 'duration' ? ('int' as const) : ('string' as const) }])),
);

/** File key paths of the settings marked `secret`: never shown (logs, diffs, /status, hashes). */
export const SECRET_PATHS: readonly string[] = Object.freeze(SECTIONS.flatMap((s) => rows(s).filter(([, r]) => r.secret === true).map(([k]) => `${s}.${k}`)));
