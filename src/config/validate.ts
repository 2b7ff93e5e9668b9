// validate(): a raw TOML object (the environment applied) → the frozen Config, or every problem
// with its path. The rows check each key (./fields.ts); what no single row can say is checked
// here: unknown sections, [[backends]] and [[services]] lists, shared listen addresses. Pure.

import type { ConfigIssue } from '../errors';
import type { Cidr, HostPort } from './address';
import { DEFAULT_SERVICE, KEYS, SCHEMA, OVERRIDABLE, SECTIONS, isFlat, isList, rows, type BackendConfig, type Config, type SectionName, type ServiceConfig } from './settings';
import { readFields, readRows, toValues } from './fields';
import { checkHealth } from './step-text';
import { PROCESS_ENV } from './environment';
import { describe, didYouMean, isTable, type Raw } from './suggest';

const SERVICE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const DNS_NAME_RE = /^[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*$/;

export interface ValidateContext {
  /** 1-based line where a key path (or its nearest ancestor) stands in the file */
  readonly locate?: (path: string) => number | undefined;
  /** key paths whose value came from an environment variable, with its name */
  readonly origins?: ReadonlyMap<string, string>;
}

export type ValidateResult = { readonly ok: true; readonly config: Config } | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

export function validate(raw: Raw, ctx: ValidateContext = {}): ValidateResult {
  const issues: ConfigIssue[] = [];
  const report = (path: string, message: string): void => {
    const env = ctx.origins?.get(path);
    if (env) {
      issues.push({ path: env, message: `${message} (from the environment, for ${path})` });
      return;
    }
    const line = ctx.locate?.(path);
    issues.push(line === undefined ? { path, message } : { path, line, message });
  };

  // The older top-level `strategy = "…"` form.
  const top: Raw = { ...raw };
  if (typeof top['strategy'] === 'string') top['strategy'] = { algorithm: top['strategy'] };

  for (const key of Object.keys(top)) {
    if (!(SECTIONS as string[]).includes(key)) {
      report(key, `unknown section or key "${key}"${didYouMean(key, SECTIONS)}`);
    }
  }

  const section = (name: SectionName): Record<string, unknown> => {
    const v = top[name];
    if (v === undefined) return {};
    if (!isTable(v)) {
      report(name, `expected a table [${name}], got ${describe(v)}`);
      return {};
    }
    return v;
  };

  // Every section but the lists: checked values by file key, defaults filled in.
  const checked = new Map<SectionName, Record<string, unknown>>();
  for (const s of SECTIONS) {
    if (isList(s)) continue;
    checked.set(s, readFields(s, section(s), s, report));
  }
  checkStrategy(isTable(top['strategy']) ? top['strategy'] : {}, checked.get('strategy')!, 'strategy.', report);
  checkHealth(isTable(top['health']) ? top['health'] : {}, checked.get('health')!, 'health.', report);
  const admin = checked.get('admin')!;
  if ((admin['tls_cert'] === '') !== (admin['tls_key'] === '') && typeof admin['tls_cert'] === 'string' && typeof admin['tls_key'] === 'string') {
    const [set, unset] = admin['tls_cert'] === '' ? ['tls_key', 'tls_cert'] : ['tls_cert', 'tls_key'];
    report(`admin.${unset}`, `admin.tls_cert and admin.tls_key go together: ${set} is set, so ${unset} must name its ${unset === 'tls_key' ? 'private key' : 'certificate'} file (or leave both "" for plain HTTP)`);
  }
  const dns = checked.get('dns')!;
  if (typeof dns['min_ttl'] === 'number' && typeof dns['max_ttl'] === 'number' && dns['max_ttl'] < dns['min_ttl']) {
    report('dns.max_ttl', `must be at least min_ttl (${dns['min_ttl']} ms), got ${dns['max_ttl']} ms`);
  }

  const rawBackends = top['backends'];
  // top-level [[backends]] make the service "default"; a file may have it, [[services]], or both
  const hasDefault = rawBackends !== undefined && !(Array.isArray(rawBackends) && rawBackends.length === 0);
  const backends = hasDefault ? readBackends(rawBackends, 'backends', report) : [];
  const services = top['services'] === undefined ? [] : readServices(top['services'], checked, report);
  if (!hasDefault && top['services'] === undefined) {
    report('backends', `at least one [[backends]] entry is required (or set ${PROCESS_ENV.backendAddresses.name}), or a [[services]] entry with its own`);
  }
  if (top['tls'] !== undefined) {
    if (!hasDefault) report('tls', 'top-level [tls] is the default service\'s (top-level [[backends]]), and there is none: write a [services.tls] table in the [[services]] entry that terminates TLS');
    else checkTls(checked.get('tls')!, 'tls', report);
  }
  checkAcceptProxy(checked.get('proxy')!, 'proxy.', report);
  if (hasDefault) checkUdp(isTable(top['proxy']) ? top['proxy'] : {}, checked.get('proxy')!, 'proxy.', top['tls'] !== undefined ? 'tls' : top['backend_tls'] !== undefined ? 'backend_tls' : null, report);
  if (top['backend_tls'] !== undefined) {
    if (!hasDefault) report('backend_tls', 'top-level [backend_tls] is the default service\'s (top-level [[backends]]), and there is none: write a [services.backend_tls] table in the [[services]] entry whose backends speak TLS');
    else checkBackendTls(checked.get('backend_tls')!, 'backend_tls', report);
  }
  if (hasDefault && checked.get('proxy')!['listen_address'] === null) {
    report('proxy.listen_address', `required with top-level [[backends]]: the address "host:port" to listen on, e.g. "0.0.0.0:8080" (or set ${SCHEMA.proxy.listen_address.env})`);
  }

  if (issues.length > 0) return { ok: false, issues };

  const config: Record<string, unknown> = {}; // in table order, which the diff's order follows
  for (const s of SECTIONS) {
    const c = checked.get(s);
    config[s] = s === 'backends' ? backends : s === 'services' ? services : isFlat(s) ? Object.values(c!)[0] : toValues(s, c!);
  }
  if (backends.length > 0) {
    // the seed's layout is the service named "default", first
    const proxy = config['proxy'] as Record<string, unknown>;
    services.unshift(
      serviceValues(
        { name: DEFAULT_SERVICE, listenAddress: proxy['listenAddress'], listen: proxy['listen'], sni: [], maxConnections: 0 },
        toValues(OVERRIDABLE.strategy, checked.get('strategy')!),
        toValues(OVERRIDABLE.proxy, checked.get('proxy')!),
        config['health'] as Record<string, unknown>,
        top['tls'] !== undefined ? (config['tls'] as Record<string, unknown>) : null,
        backends,
        originates(checked.get('backend_tls')!) ? (config['backend_tls'] as Record<string, unknown>) : null,
      ),
    );
  }
  // worker processes spread a UDP address's datagrams by the client's address (SO_REUSEPORT): a
  // QUIC client that moved would reach a worker that never learned its connection IDs
  const quic = services.findIndex((x) => x.proxy.protocol === 'udp' && x.proxy.udpAffinity === 'quic');
  const workers = (config['runtime'] as Config['runtime']).workers;
  if (quic >= 0 && workers !== 1) {
    report('runtime.workers', `service "${services[quic]!.name}" has udp_affinity = "quic", whose connection IDs one process learns: set workers = 1 (got ${workers})`);
  }
  checkSharedAddresses(services, (i, key) => (services[i]!.name === DEFAULT_SERVICE ? `proxy.${key}` : `services[${backends.length > 0 ? i - 1 : i}].${key}`), report);
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, config: deepFreeze(config as Config) };
}

const SERVICE_KEYS = [...KEYS.get('services')!, ...[...OVERRIDABLE.proxy, ...OVERRIDABLE.strategy].map(([k]) => k), 'health', 'tls', 'backend_tls', 'backends'];

function serviceValues(
  own: Record<string, unknown>,
  strategy: Record<string, unknown>,
  proxy: Record<string, unknown>,
  health: Record<string, unknown>,
  tls: Record<string, unknown> | null,
  backends: readonly BackendConfig[],
  backendTls: Record<string, unknown> | null = null,
): ServiceConfig {
  return { ...own, ...strategy, proxy, health, tls, backendTls, backends } as unknown as ServiceConfig;
}

/** A [backend_tls] table that is on (`enabled = true`): the service speaks TLS to its backends. */
const originates = (values: Record<string, unknown>): boolean => values['enabled'] === true;

/**
 * What the [backend_tls] rows cannot say alone: cert and key go together.
 */
function checkBackendTls(values: Record<string, unknown>, at: string, report: (path: string, message: string) => void): void {
  if (typeof values['cert'] === 'string' && typeof values['key'] === 'string' && (values['cert'] === '') !== (values['key'] === '')) {
    const [set, unset] = values['cert'] === '' ? ['key', 'cert'] : ['cert', 'key'];
    report(`${at}.${unset}`, `cert and key go together: ${set} is set, so ${unset} must name its ${unset === 'key' ? 'private key' : 'certificate'} file (or leave both "" to send no client certificate)`);
  }
}

/**
 * The services that speak TLS to their backends without verifying them (verify = false): one
 * warning each, for --validate and the start log, naming the service and the key.
 */
export function backendTlsWarnings(config: Config): { readonly path: string; readonly message: string }[] {
  const hasDefault = config.services[0]?.name === DEFAULT_SERVICE;
  return config.services.flatMap((svc, i) => {
    if (svc.backendTls === null || svc.backendTls.verify) return [];
    const path = svc.name === DEFAULT_SERVICE ? 'backend_tls.verify' : `services[${hasDefault ? i - 1 : i}].backend_tls.verify`;
    return [{ path, message: `${path} = false: service ${svc.name} speaks TLS to its backends without verifying their certificates (anyone on the path can pose as a backend)` }];
  });
}

/** What the [tls] rows cannot say alone: a table that terminates names a certificate, and client_auth needs client_ca. */
function checkTls(values: Record<string, unknown>, at: string, report: (path: string, message: string) => void): void {
  const certs = values['certificates'];
  if (Array.isArray(certs) && certs.length === 0) report(`${at}.certificates`, 'a [tls] table terminates TLS and needs at least one certificate: certificates = [{ cert = "….pem", key = "….key" }]');
  if (values['client_auth'] !== undefined && values['client_auth'] !== 'none' && values['client_ca'] === '') {
    report(`${at}.client_auth`, `"${String(values['client_auth'])}" needs client_ca, the PEM file of the CAs client certificates must chain to`);
  }
}

/**
 * Services on one listen address: they are told apart by sni, so at most one leaves it
 * empty (the default route) and a name belongs to one of them; and the socket reads the
 * ClientHello (and a PROXY header) before it knows the service, so they share one inspect_timeout,
 * accept_proxy and accept_proxy_from. `at(i, key)`: the
 * path of service i's key.
 */
function checkSharedAddresses(services: readonly ServiceConfig[], at: (i: number, key: string) => string, report: (path: string, message: string) => void): void {
  const byAddress = new Map<string, number[]>();
  services.forEach((svc, i) => {
    const list = byAddress.get(svc.listenAddress);
    if (list) list.push(i);
    else byAddress.set(svc.listenAddress, [i]);
  });
  for (const [address, list] of byAddress) {
    if (list.length < 2) continue;
    const udp = list.find((i) => services[i]!.proxy.protocol === 'udp');
    if (udp !== undefined) {
      const other = services[list.find((i) => i !== udp)!]!;
      report(at(udp, 'listen_address'), `${address} is also the listen address of service "${other.name}": a protocol = "udp" service has its listen address to itself (one UDP socket, no sni to tell services apart)`);
      continue;
    }
    let fallback: number | undefined;
    const owner = new Map<string, number>();
    const first = services[list[0]!]!;
    for (const i of list) {
      const svc = services[i]!;
      if (svc.sni.length === 0) {
        if (fallback !== undefined) {
          report(
            at(i, 'listen_address'),
            `${address} is also the listen address of service "${services[fallback]!.name}", and neither lists sni: services may share an address only when told apart by sni, and at most one of them may leave it empty (the default route)`,
          );
        } else fallback = i;
      }
      for (const name of svc.sni) {
        const o = owner.get(name);
        if (o !== undefined) report(at(i, 'sni'), `"${name}" is also in the sni of service "${services[o]!.name}" on ${address}: a name routes to one service`);
        else owner.set(name, i);
      }
      if (svc.proxy.acceptProxy !== first.proxy.acceptProxy) {
        report(at(i, 'accept_proxy'), `services sharing ${address} must have the same accept_proxy (the header is read before the service is known): "${first.name}" has "${first.proxy.acceptProxy}", "${svc.name}" "${svc.proxy.acceptProxy}"`);
      } else if (svc.proxy.acceptProxy !== 'off' && cidrList(svc.proxy.acceptProxyFrom) !== cidrList(first.proxy.acceptProxyFrom)) {
        report(at(i, 'accept_proxy_from'), `services sharing ${address} must have the same accept_proxy_from (the peer is judged before the service is known): "${first.name}" has [${cidrList(first.proxy.acceptProxyFrom)}], "${svc.name}" [${cidrList(svc.proxy.acceptProxyFrom)}]`);
      }
      if (svc.proxy.inspectTimeoutMs !== first.proxy.inspectTimeoutMs) {
        report(
          at(i, 'inspect_timeout'),
          `services sharing ${address} must have the same inspect_timeout (the ClientHello is read before the service is known): "${first.name}" has ${first.proxy.inspectTimeoutMs} ms, "${svc.name}" ${svc.proxy.inspectTimeoutMs} ms`,
        );
      }
    }
  }
}

/**
 * accept_proxy trusts a header from the peers of accept_proxy_from only: on, it needs at least one
 * (trusting every peer is written out); a UDP service has no stream to carry one.
 */
function checkAcceptProxy(values: Record<string, unknown>, prefix: string, report: (path: string, message: string) => void): void {
  const mode = values['accept_proxy'];
  if (mode === 'off' || typeof mode !== 'string') return;
  if (values['protocol'] === 'udp') {
    report(`${prefix}accept_proxy`, `a protocol = "udp" service reads no PROXY protocol header: expected "off", got "${mode}"`);
    return;
  }
  const from = values['accept_proxy_from'];
  if (Array.isArray(from) && from.length === 0) {
    report(
      `${prefix}accept_proxy_from`,
      `accept_proxy = "${mode}" takes the client address from a header only the peers listed here may send, and none is: list the balancers in front, e.g. ["10.0.0.0/8"] (["0.0.0.0/0", "::/0"] trusts every peer)`,
    );
  }
}

function cidrList(list: readonly Cidr[]): string {
  return list.map((c) => JSON.stringify(c.text)).join(', ');
}

const UDP_KEYS = OVERRIDABLE.proxy.map(([k]) => k).filter((k) => k.startsWith('udp_'));

/**
 * protocol = "udp" and the udp_* keys, checked where they are written (`table`, the values read
 * from it with their defaults in `values`): a udp_* key on a TCP service is a mistake, and a UDP
 * service carries neither TLS, the PROXY protocol nor a server name.
 */
function checkUdp(table: Raw, values: Record<string, unknown>, prefix: string, tlsPath: string | null, report: (path: string, message: string) => void, strategy: Record<string, unknown> = {}): void {
  if (values['protocol'] !== 'udp') {
    for (const k of UDP_KEYS) {
      if (table[k] !== undefined) report(`${prefix}${k}`, `${k} applies to UDP services only, and this service's protocol is "${String(values['protocol'])}": set protocol = "udp" or remove ${k}`);
    }
    return;
  }
  if (tlsPath !== null) report(tlsPath, `a protocol = "udp" service relays datagrams as they come, with no TLS either way: remove the ${tlsPath.split('.').pop()} table or set protocol = "tcp"`);
  if (table['tcp_keepalive'] !== undefined) report(`${prefix}tcp_keepalive`, 'a protocol = "udp" service has no TCP connection to keep alive: remove tcp_keepalive');
  if (values['proxy_protocol'] !== 'off') report(`${prefix}proxy_protocol`, `a protocol = "udp" service sends no PROXY protocol header: expected "off", got "${String(values['proxy_protocol'])}"`);
  if (Array.isArray(table['sni']) && table['sni'].length > 0) report(`${prefix}sni`, 'a protocol = "udp" service has no TLS server name to route by: expected sni = [] or no sni');
  if (strategy['hash_key'] === 'sni') report(`${prefix}hash_key`, 'a protocol = "udp" service has no TLS server name to hash: expected "source_ip"');
}

/**
 * What the [strategy] rows cannot say alone: hash_balance_factor is 0 or at least 100. Checked
 * where the key is written (an inherited value was checked at the top level).
 */
function checkStrategy(table: Raw, values: Record<string, unknown>, prefix: string, report: (path: string, message: string) => void): void {
  const f = values['hash_balance_factor'];
  if (table['hash_balance_factor'] !== undefined && typeof f === 'number' && f > 0 && f < 100) {
    report(`${prefix}hash_balance_factor`, `must be 0 (off) or a percentage of at least 100, got ${f}`);
  }
}

/** A [[backends]] list (top-level or a service's): ids, names and addresses unique within it. */
function readBackends(raw: unknown, at: string, report: (path: string, message: string) => void): BackendConfig[] {
  const backends: BackendConfig[] = [];
  if (!Array.isArray(raw)) {
    report(at, `expected an array of tables [[${at.replace(/\[\d+\]/g, '')}]], got ${describe(raw)}`);
    return backends;
  }
  const seen = { id: new Map<number, number>(), name: new Map<string, number>(), address: new Map<string, number>() };
  raw.forEach((b: unknown, i: number) => {
    const p = `${at}[${i}]`;
    if (!isTable(b)) {
      report(p, `expected a table, got ${describe(b)}`);
      return;
    }
    const f = readFields('backends', b, p, report);
    const id = b['id'] === undefined ? i : (f['id'] as number | undefined);
    const name = typeof f['name'] === 'string' && f['name'] !== '' ? (f['name'] as string) : `backend-${(id ?? i) + 1}`;
    if (b['name'] !== undefined && f['name'] === '') report(`${p}.name`, 'expected a non-empty name');
    const srv = typeof f['srv'] === 'string' ? (f['srv'] as string).trim().replace(/\.$/, '') : '';
    // an SRV backend's address is its SRV name (port 0): the records give the ports
    const hp = srv !== '' ? { host: srv, port: 0 } : (f['address'] as HostPort | undefined);
    if (b['address'] === undefined && srv === '') report(`${p}.address`, 'every backend needs an address "host:port" (or an SRV name as `srv`)');
    if (b['address'] !== undefined && srv !== '') report(`${p}.srv`, 'a backend has either address or srv, not both: srv takes the addresses and ports from the SRV records');
    if (srv !== '' && !DNS_NAME_RE.test(srv)) report(`${p}.srv`, `expected an SRV name like "_pg._tcp.db.internal", got "${f['srv'] as string}"`);
    const dup = <K>(kind: 'id' | 'name' | 'address', map: Map<K, number>, key: K | undefined): void => {
      if (key === undefined) return;
      const prev = map.get(key);
      if (prev !== undefined) report(`${p}.${kind}`, `duplicate ${kind} ${JSON.stringify(key)} (also ${at}[${prev}])`);
      else map.set(key, i);
    };
    dup('id', seen.id, id);
    dup('name', seen.name, name);
    const backend = hp ? toValues('backends', { ...f, address: hp, srv }) : undefined;
    if (backend && srv !== '') backend['address'] = srv;
    dup('address', seen.address, backend?.['address'] as string | undefined);
    if (id === undefined || !backend) return;
    backend['id'] = id;
    backend['name'] = name;
    backends.push(backend as BackendConfig);
  });
  return backends;
}

/**
 * The [[services]] entries: their own keys, the overridable [proxy], [strategy] and [health] keys
 * (each defaulting to the top-level value), and their [[services.backends]].
 */
function readServices(raw: unknown, top: ReadonlyMap<SectionName, Record<string, unknown>>, report: (path: string, message: string) => void): ServiceConfig[] {
  const out: ServiceConfig[] = [];
  if (!Array.isArray(raw)) {
    report('services', `expected an array of tables [[services]], got ${describe(raw)}`);
    return out;
  }
  const names = new Map<string, number>();
  raw.forEach((t: unknown, i: number) => {
    const p = `services[${i}]`;
    if (!isTable(t)) {
      report(p, `expected a table, got ${describe(t)}`);
      return;
    }
    for (const key of Object.keys(t)) {
      if (!SERVICE_KEYS.includes(key)) report(`${p}.${key}`, `unknown key "${key}" in [[services]]${didYouMean(key, SERVICE_KEYS)}`);
    }
    const own = readRows(rows('services'), t, p, report);
    const name = own['name'];
    if (t['name'] === undefined) report(`${p}.name`, 'every service needs a name');
    else if (typeof name === 'string' && !SERVICE_NAME_RE.test(name)) report(`${p}.name`, `expected 1-64 of A-Z a-z 0-9 . _ -, got "${name}"`);
    else if (name === DEFAULT_SERVICE) report(`${p}.name`, `"${DEFAULT_SERVICE}" is the name of the service the top-level [proxy] and [[backends]] make; choose another`);
    else if (typeof name === 'string') {
      const prev = names.get(name);
      if (prev !== undefined) report(`${p}.name`, `duplicate name "${name}" (also services[${prev}])`);
      else names.set(name, i);
    }
    if (t['listen_address'] === undefined) report(`${p}.listen_address`, 'every service needs a listen address "host:port"');
    const proxy = readRows(OVERRIDABLE.proxy, t, p, report, top.get('proxy'));
    const strategy = readRows(OVERRIDABLE.strategy, t, p, report, top.get('strategy'));
    checkStrategy(t, strategy, `${p}.`, report);
    if (t['accept_proxy'] !== undefined || t['accept_proxy_from'] !== undefined || proxy['protocol'] === 'udp') checkAcceptProxy(proxy, `${p}.`, report);
    checkUdp(t, proxy, `${p}.`, t['tls'] !== undefined ? `${p}.tls` : t['backend_tls'] !== undefined ? `${p}.backend_tls` : null, report, strategy);
    let healthTable: Raw = {};
    if (t['health'] !== undefined) {
      if (!isTable(t['health'])) report(`${p}.health`, `expected a table [services.health], got ${describe(t['health'])}`);
      else {
        healthTable = t['health'];
        const keys = OVERRIDABLE.health.map(([k]) => k);
        for (const key of Object.keys(healthTable)) {
          if (!keys.includes(key)) report(`${p}.health.${key}`, `unknown key "${key}" in [services.health]${didYouMean(key, keys)}`);
        }
      }
    }
    const health = readRows(OVERRIDABLE.health, healthTable, `${p}.health`, report, top.get('health'));
    checkHealth(healthTable, health, `${p}.health.`, report);
    let tls: Record<string, unknown> | null = null;
    if (t['tls'] !== undefined) {
      if (!isTable(t['tls'])) report(`${p}.tls`, `expected a table [services.tls], got ${describe(t['tls'])}`);
      else {
        tls = readFields('tls', t['tls'], `${p}.tls`, report);
        checkTls(tls, `${p}.tls`, report);
      }
    }
    let backendTls: Record<string, unknown> | null = null;
    if (t['backend_tls'] !== undefined) {
      if (!isTable(t['backend_tls'])) report(`${p}.backend_tls`, `expected a table [services.backend_tls], got ${describe(t['backend_tls'])}`);
      else {
        backendTls = readFields('backend_tls', t['backend_tls'], `${p}.backend_tls`, report);
        checkBackendTls(backendTls, `${p}.backend_tls`, report);
      }
    }
    const backends = t['backends'] === undefined ? [] : readBackends(t['backends'], `${p}.backends`, report);
    if (backends.length === 0) report(`${p}.backends`, 'a service needs at least one [[services.backends]] entry');
    if (t['name'] === undefined || t['listen_address'] === undefined || own['listen_address'] == null) return;
    out.push(serviceValues(toValues(rows('services'), own), toValues(OVERRIDABLE.strategy, strategy), toValues(OVERRIDABLE.proxy, proxy), toValues(OVERRIDABLE.health, health), tls === null ? null : toValues('tls', tls), backends, backendTls !== null && originates(backendTls) ? toValues('backend_tls', backendTls) : null));
  });
  return out;
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o) && !(o instanceof Uint8Array)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
