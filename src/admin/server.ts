// The HTTP admin API and the status page. It reads the app through one interface and
// never touches the data plane directly.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { createSecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { HostPort } from '../config/address';
import type { AdminTls } from '../config/admin-tls';
import { formatHostPort } from '../config/address';
import { BindError } from '../errors';
import { checkCrossSite, checkHost, checkTokenlessPeer, isLoopback, type Refusal } from '../config/admin-exposure';
import type { BackendState } from '../core/backend';
import { certificateFacts, type CertificateFacts } from '../core/certificate';
import { COMMIT, VERSION } from '../version';
import { STATUS_PAGE, STATUS_PAGE_CSP } from './status-page';
import type { AdminAction, Answer, BackendRow, CertificateRow, EventRow, HealthAnswer, ReloadAnswer, ServiceRow, StatusAnswer, TrafficAnswer, VersionAnswer } from './wire';

/** What a backend action came to: done, nothing of that name, or the name in several services. */
export type ActionResult =
  | { readonly kind: 'ok'; readonly service: string; readonly state: BackendState }
  | { readonly kind: 'not_found'; readonly what: string }
  | { readonly kind: 'ambiguous'; readonly services: readonly string[] };

export interface AdminApi {
  /** the whole balancer, or one service (null: no such service) */
  health(service?: string): HealthAnswer | null;
  ready(): boolean;
  /** bring the data plane's figures up to date before they are read (several processes) */
  refresh(): Promise<void>;
  status(): StatusAnswer;
  backends(): readonly BackendRow[];
  services(): readonly ServiceRow[];
  events(): readonly EventRow[];
  /** the status page's chart data and recent non-clean terminations */
  traffic(): TrafficAnswer;
  /** every certificate served (absent: answered as none) */
  certificates?(): readonly CertificateRow[];
  /** `service` undefined: the backend of that name, if only one service has it */
  backendAction(service: string | undefined, name: string, action: AdminAction): ActionResult;
  reload(trigger: string): Promise<ReloadAnswer>;
  metrics(): Promise<{ contentType: string; body: string }>;
  token(): string;
  /** [admin] allowed_hosts, read at each request like the token; absent = none */
  allowedHosts?(): readonly string[];
}

const JSON_TYPE = 'application/json; charset=utf-8';

// Connection limits, fixed like a stats frontend's (docs/admin-api.md): a client that opens
// connections and sends nothing, or its headers a byte at a time, must not hold descriptors the
// proxy needs, nor keep keepalived and Prometheus out.
/** Open admin connections at most; past it the oldest one without a request under way is closed. */
export const ADMIN_MAX_CONNECTIONS = 256;
/** From the connection (or the previous request) to the end of the request headers. */
export const ADMIN_HEADERS_TIMEOUT_MS = 10_000;
/** The whole request, its body included. */
export const ADMIN_REQUEST_TIMEOUT_MS = 30_000;
/** An idle kept-alive connection between requests. */
export const ADMIN_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** No byte either way (a client that does not read its answer). */
export const ADMIN_IDLE_TIMEOUT_MS = 30_000;
/** How often Node checks the headers and request timeouts (its default is 30 s). */
const TIMEOUT_CHECK_MS = 1_000;
/** A cap that closes connections is said at most this often. */
const CAP_WARN_MS = 10_000;

export interface AdminServerOptions {
  /** the connection cap closed connections (said at most once every 10 s, with the counts) */
  readonly warn?: (message: string, fields: Record<string, unknown>) => void;
  readonly now?: () => number;
  /** [admin] tls_cert and tls_key as loaded at start: set, the API speaks HTTPS only */
  readonly tls?: AdminTls | null;
}

/** Bound but not serving yet: commit() serves it in place of the old listener, abort() lets it go. */
export interface PendingListener {
  commit(): void;
  abort(): void;
}

/** The TCP socket under a request's socket: a TLS socket's own (Node keeps it as `_parent`), else itself. */
function rawSocket(s: Socket): Socket {
  return (s as Socket & { _parent?: Socket | null })._parent ?? s;
}

export class AdminServer {
  private server: http.Server | null = null;
  /** what the server in use serves: null = plain HTTP */
  private tls: AdminTls | null;
  private bound = '';
  /** every request's Host is checked while the API listens on loopback only (against DNS rebinding) */
  private loopbackOnly = true;
  /** open connections, oldest first, each with its request's answer (null: none yet, or between requests) */
  private readonly conns = new Map<Socket, ServerResponse | null>();
  /** connections the cap closed: an older idle one to make room, or the new one when none was idle */
  readonly dropped = { evicted: 0, refused: 0 };
  private warnedAt = -Infinity;
  /** the facts of the certificate served, read once per certificate (and path) */
  private served: { readonly tls: AdminTls; readonly file: string; readonly facts: CertificateFacts } | null = null;

  constructor(
    private readonly api: AdminApi,
    private readonly opts: AdminServerOptions = {},
  ) {
    this.tls = opts.tls ?? null;
  }

  get address(): string {
    return this.bound;
  }

  /** The listener in use speaks HTTPS. */
  get secure(): boolean {
    return this.tls !== null;
  }

  /** The certificate the listener in use serves (null: plain HTTP); `file`: its path, [admin] tls_cert. */
  certificate(file: string): CertificateFacts | null {
    const tls = this.tls;
    if (tls === null) return null;
    const s = this.served;
    if (s !== null && s.tls === tls && s.file === file) return s.facts;
    // checked at load: it parses
    const facts = certificateFacts(file, tls.cert);
    this.served = { tls, file, facts };
    return facts;
  }

  /** Bind without serving yet (see ProxyListener.prepare); `tls` null = plain HTTP. */
  async prepare(addr: HostPort, tls: AdminTls | null = this.tls): Promise<PendingListener> {
    const server = await this.bind((s) => s.listen({ host: addr.host, port: addr.port }), formatHostPort(addr), tls);
    return { commit: () => this.install(server, tls), abort: () => server.close() };
  }

  async listen(addr: HostPort): Promise<void> {
    (await this.prepare(addr)).commit();
  }

  async adopt(fd: number): Promise<void> {
    this.install(await this.bind((s) => s.listen({ fd }), `fd ${fd}`, this.tls), this.tls);
  }

  /**
   * New certificate and key for the HTTPS listener in use: checked now (a bad pair throws before
   * anything changes), applied by commit() to the next handshakes; open connections keep theirs.
   */
  renew(tls: AdminTls): PendingListener & { readonly changed: boolean } {
    createSecureContext({ cert: tls.cert, key: tls.key });
    const was = this.tls;
    return {
      changed: was === null || !was.cert.equals(tls.cert) || !was.key.equals(tls.key),
      commit: () => {
        const s = this.server;
        if (s instanceof https.Server) s.setSecureContext({ cert: tls.cert, key: tls.key });
        this.tls = tls;
      },
      abort: () => {},
    };
  }

  /**
   * Between HTTP and HTTPS on the same address: one port cannot hold two listeners, so the old one
   * stops accepting (its open connections go on), the new one is bound in its place, and abort()
   * (or a failed bind) binds the old kind again. Connections tried in between are refused.
   */
  async prepareSwitch(tls: AdminTls | null): Promise<PendingListener> {
    const old = this.server;
    const a = old?.address();
    if (!old || !a || typeof a !== 'object') throw new BindError('admin', this.bound || '""', 'the admin listener has no address of its own to bind again');
    const addr = { host: a.address, port: a.port };
    const was = this.tls;
    const rebindOld = async (): Promise<void> => {
      try {
        this.install(await this.bind((s) => s.listen(addr), formatHostPort(addr), was), was);
      } catch (e) {
        this.opts.warn?.('admin API: could not listen again after a failed switch between HTTP and HTTPS', { error: (e as Error).message });
      }
    };
    old.close();
    let server: http.Server;
    try {
      server = await this.bind((s) => s.listen(addr), formatHostPort(addr), tls);
    } catch (e) {
      await rebindOld();
      throw e;
    }
    return {
      commit: () => this.install(server, tls),
      abort: () => {
        server.close();
        server.closeAllConnections();
        void rebindOld();
      },
    };
  }

  private install(server: http.Server, tls: AdminTls | null): void {
    this.tls = tls;
    const a = server.address();
    this.bound = a && typeof a === 'object' ? formatHostPort({ host: a.address, port: a.port }) : String(a);
    // a Unix socket (string address) is local only, like loopback
    this.loopbackOnly = a && typeof a === 'object' ? isLoopback(a.address) : true;
    const old = this.server;
    this.server = server;
    if (old) {
      old.close();
      old.closeIdleConnections();
    }
  }

  private bind(listen: (s: http.Server) => void, label: string, tls: AdminTls | null): Promise<http.Server> {
    // HTTP/1.1 without Host is refused in handle(), with a JSON answer and the usual headers
    const options = { requireHostHeader: false, connectionsCheckingInterval: TIMEOUT_CHECK_MS };
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      const sock = rawSocket(req.socket);
      if (this.conns.has(sock)) this.conns.set(sock, res);
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) send(res, 500, { error: String((e as Error)?.message ?? e) });
        else res.destroy();
      });
    };
    // the same server either way; a TLS handshake gets as long as a request's headers
    const server: http.Server =
      tls === null
        ? http.createServer(options, onRequest)
        : https.createServer({ ...options, cert: tls.cert, key: tls.key, handshakeTimeout: ADMIN_HEADERS_TIMEOUT_MS }, onRequest);
    server.keepAliveTimeout = ADMIN_KEEP_ALIVE_TIMEOUT_MS;
    server.headersTimeout = ADMIN_HEADERS_TIMEOUT_MS;
    server.requestTimeout = ADMIN_REQUEST_TIMEOUT_MS;
    // without a 'timeout' listener, a socket idle this long is destroyed
    server.setTimeout(ADMIN_IDLE_TIMEOUT_MS);
    server.on('connection', (sock: Socket) => this.admit(sock));
    return new Promise<http.Server>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => reject(new BindError('admin', label, err.code ?? err.message));
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        server.on('error', () => {});
        resolve(server);
      });
      listen(server);
    });
  }

  /**
   * The cap: a new connection past it closes the oldest one that has no request under way (a
   * client still sending its headers, or idle between requests), else the new one.
   */
  private admit(sock: Socket): void {
    if (this.conns.size >= ADMIN_MAX_CONNECTIONS) {
      let victim: Socket | null = null;
      for (const [s, res] of this.conns) {
        if (res === null || res.writableEnded) {
          victim = s;
          break;
        }
      }
      if (victim === null) {
        this.dropped.refused++;
        sock.destroy();
        this.warnCap();
        return;
      }
      this.conns.delete(victim);
      victim.destroy();
      this.dropped.evicted++;
      this.warnCap();
    }
    this.conns.set(sock, null);
    sock.once('close', () => this.conns.delete(sock));
  }

  private warnCap(): void {
    const now = (this.opts.now ?? Date.now)();
    if (now - this.warnedAt < CAP_WARN_MS) return;
    this.warnedAt = now;
    this.opts.warn?.(`admin API: ${ADMIN_MAX_CONNECTIONS} connections open, closing the oldest idle ones (or new ones)`, {
      maxConnections: ADMIN_MAX_CONNECTIONS,
      evicted: this.dropped.evicted,
      refused: this.dropped.refused,
    });
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }

  /** Exposed for tests and fuzzing: handle one request. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('x-content-type-options', 'nosniff');
    const host = req.headers.host;
    if (host === undefined && req.httpVersion !== '1.0' && req.httpVersion !== '0.9') {
      return send(res, 400, { error: 'an HTTP/1.1 request needs a Host header' });
    }
    const allowedHosts = this.api.allowedHosts?.() ?? [];
    if (this.loopbackOnly) {
      const refused = checkHost(host, allowedHosts);
      if (refused) return send(res, refused.code, { error: refused.message });
    }
    let url: URL;
    try {
      // only the path matters: a target like //x would otherwise be read as a host
      url = new URL((req.url ?? '/').replace(/^\/+/, '/'), 'http://admin');
    } catch {
      return send(res, 400, { error: `malformed request target: ${JSON.stringify(req.url)}` });
    }
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const route = ROUTES.find((r) => r.match.test(path));
    if (!route) return send(res, 404, { error: `no such endpoint: ${path}` });
    if (!route.methods.includes(method) && !(method === 'HEAD' && route.methods.includes('GET'))) {
      res.setHeader('allow', route.methods.join(', '));
      return send(res, 405, { error: `${method} not allowed on ${path}; use ${route.methods.join(' or ')}` });
    }
    if (route.mutating) {
      const refused = this.checkMutation(req, allowedHosts);
      if (refused) return send(res, refused.code, { error: refused.message });
    }
    await drainBody(req);
    await route.run(this.api, res, path.match(route.match)!, url);
  }

  /** Host (on any address), then cross-site headers, then the token or, without one, a loopback peer. */
  private checkMutation(req: IncomingMessage, allowedHosts: readonly string[]): Refusal | null {
    const h = req.headers;
    const fetchSite = h['sec-fetch-site'];
    return (
      (this.loopbackOnly ? null : checkHost(h.host, allowedHosts)) ??
      checkCrossSite({ host: h.host, origin: h.origin, secFetchSite: Array.isArray(fetchSite) ? fetchSite.join(',') : fetchSite }) ??
      this.checkToken(req)
    );
  }

  private checkToken(req: IncomingMessage): Refusal | null {
    const token = this.api.token();
    if (token === '') return checkTokenlessPeer(req.socket.remoteAddress);
    const h = req.headers['authorization'];
    if (!h) return { code: 401, message: 'this endpoint needs "Authorization: Bearer <token>"' };
    const m = /^Bearer\s+(.+)$/i.exec(h);
    if (!m || !constantTimeEqual(m[1]!.trim(), token)) return { code: 403, message: 'wrong token' };
    return null;
  }
}

export function constantTimeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

interface Route {
  readonly match: RegExp;
  readonly methods: readonly string[];
  readonly mutating?: boolean;
  readonly run: (api: AdminApi, res: ServerResponse, m: RegExpMatchArray, url: URL) => Promise<void> | void;
}

/** GET /version: fixed for the life of the process */
const RUNNING: VersionAnswer = { version: VERSION, node: process.versions.node, commit: COMMIT };

const ROUTES: readonly Route[] = [
  {
    match: /^\/$/,
    methods: ['GET'],
    run: (_api, res) => {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
        'content-security-policy': STATUS_PAGE_CSP,
        'x-frame-options': 'DENY',
      });
      res.end(STATUS_PAGE);
    },
  },
  {
    match: /^\/health$/,
    methods: ['GET'],
    run: (api, res, _m, url) => {
      const service = url.searchParams.get('service');
      const h = api.health(service ?? undefined);
      if (h === null) return send(res, 404, { error: `no service named "${service}"` });
      send(res, h.status === 'unhealthy' ? 503 : 200, h);
    },
  },
  {
    match: /^\/ready$/,
    methods: ['GET'],
    run: (api, res) => {
      const r = api.ready();
      send(res, r ? 200 : 503, { ready: r });
    },
  },
  { match: /^\/version$/, methods: ['GET'], run: (_api, res) => send(res, 200, RUNNING) },
  { match: /^\/status$/, methods: ['GET'], run: async (api, res) => (await api.refresh(), send(res, 200, api.status())) },
  { match: /^\/backends$/, methods: ['GET'], run: async (api, res) => (await api.refresh(), send(res, 200, api.backends())) },
  { match: /^\/services$/, methods: ['GET'], run: async (api, res) => (await api.refresh(), send(res, 200, api.services())) },
  { match: /^\/events$/, methods: ['GET'], run: (api, res) => send(res, 200, api.events()) },
  { match: /^\/traffic$/, methods: ['GET'], run: (api, res) => send(res, 200, api.traffic()) },
  { match: /^\/certificates$/, methods: ['GET'], run: (api, res) => send(res, 200, api.certificates?.() ?? []) },
  {
    match: /^\/backends\/([^/]+)\/(drain|enable|disable)$/,
    methods: ['POST'],
    mutating: true,
    run: (api, res, m) => backendAction(api, res, undefined, m[1]!, m[2] as AdminAction),
  },
  {
    match: /^\/services\/([^/]+)\/backends\/([^/]+)\/(drain|enable|disable)$/,
    methods: ['POST'],
    mutating: true,
    run: (api, res, m) => {
      const service = decodeName(m[1]!);
      if (service === null) return send(res, 400, { error: `malformed service name in the path: ${m[1]!}` });
      backendAction(api, res, service, m[2]!, m[3] as AdminAction);
    },
  },
  {
    match: /^\/reload$/,
    methods: ['POST'],
    mutating: true,
    run: async (api, res) => {
      const r = await api.reload('admin');
      send(res, r.result === 'success' ? 200 : 422, r);
    },
  },
  {
    match: /^\/metrics$/,
    methods: ['GET'],
    run: async (api, res) => {
      await api.refresh();
      const m = await api.metrics();
      res.writeHead(200, { 'content-type': m.contentType });
      res.end(m.body);
    },
  },
];

function backendAction(api: AdminApi, res: ServerResponse, service: string | undefined, segment: string, action: AdminAction): void {
  const name = decodeName(segment);
  if (name === null) return send(res, 400, { error: `malformed backend name in the path: ${segment}` });
  const r = api.backendAction(service, name, action);
  if (r.kind === 'not_found') send(res, 404, { error: `no ${r.what}` });
  else if (r.kind === 'ambiguous') {
    send(res, 409, {
      error: `backend "${name}" is in several services (${r.services.join(', ')}): use POST /services/SERVICE/backends/${segment}/${action}`,
      services: r.services,
    });
  } else send(res, 200, { service: r.service, backend: name, action, state: r.state });
}

/** The percent-decoded backend name of a path segment, or null when its escapes are malformed. */
function decodeName(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function send(res: ServerResponse, code: number, body: Answer): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(code, { 'content-type': JSON_TYPE, 'cache-control': 'no-store' });
  res.end(text);
}

const MAX_BODY = 64 * 1024;

function drainBody(req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) req.destroy();
    });
    req.on('end', () => resolve());
    req.on('close', () => resolve());
    req.on('error', () => resolve());
  });
}
