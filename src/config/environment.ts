// The environment variables that are not a row of the settings tables (./settings.ts gives each
// overridable setting its LEMONADE_LB_* `env`): where the file is, the backend list, and what the
// process does whatever the file says (logging, the relay, the listeners, the CLI's admin URL).
// Every reader names its variable from here, and docs/settings.md lists them from here.

import { SCHEMA } from './settings';

export interface ProcessVariable {
  readonly name: string;
  /** what an unset variable means, as the reference writes it ('' = nothing: the feature is off) */
  readonly def: string;
  readonly doc: string;
  /** what is wrong with a set, non-empty value, or null; checked with the configuration */
  readonly check?: (value: string) => string | null;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const PROCESS_ENV = {
  config: {
    name: 'LEMONADE_LB_CONFIG',
    def: '/etc/lemonade/config.toml',
    doc: 'the configuration file when `--config` is not given; a file named so must exist',
  },
  backendAddresses: {
    name: 'LEMONADE_LB_BACKEND_ADDRESSES',
    def: '',
    doc: 'comma list of `host:port` that replaces `[[backends]]` (ids 0.., names `backend-1`..); with it and no file, the balancer runs from the environment alone',
  },
  log: {
    name: 'LEMONADE_LOG',
    def: 'info',
    doc: 'log level: `error`, `warn`, `info`, `debug`, `trace` (also `fatal`, `silent`)',
    check: (v) => (LOG_LEVELS.includes(v.toLowerCase()) ? null : `expected one of error, warn, info, debug, trace, got "${v}"`),
  },
  logFormat: {
    name: 'LEMONADE_LOG_FORMAT',
    def: 'json',
    doc: '`json` (one object per line) or `pretty`; `lemonade demo` defaults to `pretty`',
    check: (v) => (v === 'json' || v === 'pretty' ? null : `expected "json" or "pretty", got "${v}"`),
  },
  netSockets: {
    name: 'LEMONADE_LB_NET_SOCKETS',
    def: '',
    doc: '`1`: relay through net.Socket instead of the raw libuv handles (slower; to rule the raw relay in or out when diagnosing)',
  },
  reusePort: {
    name: 'LEMONADE_LB_REUSE_PORT',
    def: '',
    doc: '`0`: listen without `reusePort` (otherwise used on Node.js 22.12+ and 23.1+)',
  },
  adminUrl: {
    name: 'LEMONADE_ADMIN_URL',
    def: `http://${SCHEMA.admin.listen_address.def}`,
    doc: 'the admin API `lemonade status` and `lemonade backend` talk to (`--admin` overrides it)',
  },
  adminCacert: {
    name: 'LEMONADE_ADMIN_CACERT',
    def: '',
    doc: 'a PEM file of CAs that `lemonade status` and `lemonade backend` verify an `https://` admin API against (`--cacert` overrides it); unset = Node\'s bundled roots and `NODE_EXTRA_CA_CERTS`',
  },
  adminToken: {
    name: 'LEMONADE_ADMIN_TOKEN',
    def: '',
    doc: 'the token `lemonade backend` sends (`--token` overrides it)',
  },
} as const satisfies Record<string, ProcessVariable>;

export const PROCESS_VARIABLES: readonly ProcessVariable[] = Object.values(PROCESS_ENV);
