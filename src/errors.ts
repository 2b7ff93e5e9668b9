// One error class per user-visible condition, each with a literal code. docs/operations.md's
// "Errors" table lists every code; test/e2e/docs.test.ts checks that it does.

export interface ConfigIssue {
  /** key path, e.g. "proxy.max_connections" or "backends[1].address" */
  readonly path: string;
  /** 1-based line in the file where the key (or its section) stands, when known */
  readonly line?: number;
  readonly message: string;
}

export abstract class LemonadeError extends Error {
  abstract readonly code: string;
  /** process exit code when this error ends the program */
  readonly exitCode: number = 1;
}

/** The configuration (file + environment) is invalid; carries every problem found. */
export class ConfigInvalidError extends LemonadeError {
  readonly code = 'LEMONADE_CONFIG_INVALID' as const;
  constructor(readonly file: string, readonly issues: readonly ConfigIssue[]) {
    super(`${file}: ${issues.length} error${issues.length === 1 ? '' : 's'}\n` + issues.map((i) => '  ' + formatIssue(i)).join('\n'));
  }
}

/** The configuration file cannot be read. */
export class ConfigReadError extends LemonadeError {
  readonly code = 'LEMONADE_CONFIG_UNREADABLE' as const;
  constructor(readonly file: string, reason: string) {
    super(`${file}: cannot read the configuration file: ${reason}`);
  }
}

/**
 * No configuration file at the path: one named by --config or LEMONADE_LB_CONFIG must exist; the
 * default one may be replaced by LEMONADE_LB_BACKEND_ADDRESSES.
 */
export class ConfigMissingError extends LemonadeError {
  readonly code = 'LEMONADE_CONFIG_MISSING' as const;
  constructor(readonly file: string, explicit = false) {
    super(
      explicit
        ? `${file}: no such configuration file (it was named by --config or LEMONADE_LB_CONFIG, so it must exist)`
        : `${file}: no such configuration file (give --config FILE, set LEMONADE_LB_CONFIG, or set LEMONADE_LB_BACKEND_ADDRESSES)`,
    );
  }
}

/** A listening address (proxy or admin) cannot be bound. */
export class BindError extends LemonadeError {
  readonly code = 'LEMONADE_BIND_FAILED' as const;
  constructor(readonly what: string, readonly address: string, readonly reason: string) {
    super(`cannot listen on ${address} (${what}): ${reason}`);
  }
}

/** A reload asked for while the balancer stops: the running configuration stays until exit. */
export class ShuttingDownError extends LemonadeError {
  readonly code = 'LEMONADE_SHUTTING_DOWN' as const;
  constructor() {
    super('shutting down: the reload was not applied');
  }
}

/** The admin API of a running balancer cannot be reached or refused the request. */
export class AdminUnreachableError extends LemonadeError {
  readonly code = 'LEMONADE_ADMIN_UNREACHABLE' as const;
  constructor(readonly url: string, reason: string) {
    super(`cannot reach the admin API at ${url}: ${reason}`);
  }
}

/** The admin API's certificate could not be verified (or the CA to verify it against not read). */
export class AdminTlsError extends LemonadeError {
  readonly code = 'LEMONADE_ADMIN_TLS_UNVERIFIED' as const;
  constructor(readonly url: string, reason: string) {
    super(`cannot trust the admin API at ${url}: ${reason}`);
  }
}

/** The admin API answered with an error status. */
export class AdminRequestError extends LemonadeError {
  readonly code = 'LEMONADE_ADMIN_REQUEST_FAILED' as const;
  constructor(readonly url: string, readonly status: number, body: string) {
    super(`${url}: ${status} ${body.trim()}`);
  }
}

export function formatIssue(i: ConfigIssue): string {
  return `${i.path}${i.line !== undefined ? ` (line ${i.line})` : ''}: ${i.message}`;
}

/** Every literal code, for documentation checks. */
export const ERROR_CODES = [
  'LEMONADE_CONFIG_INVALID',
  'LEMONADE_CONFIG_UNREADABLE',
  'LEMONADE_CONFIG_MISSING',
  'LEMONADE_BIND_FAILED',
  'LEMONADE_SHUTTING_DOWN',
  'LEMONADE_ADMIN_UNREACHABLE',
  'LEMONADE_ADMIN_TLS_UNVERIFIED',
  'LEMONADE_ADMIN_REQUEST_FAILED',
] as const;
