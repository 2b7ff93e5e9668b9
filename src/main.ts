// CLI entry: parse arguments, dispatch to a command. Nothing else.

import cluster from 'node:cluster';
import yargs from 'yargs';
import { runDataPlaneWorker } from './runtime/worker-main';
import { runBalancer } from './cli/load-balancer';
import { runValidate } from './cli/validate';
import { runDemo, findDemoConfig } from './cli/demo';
import { startDemoBackend } from './cli/demo-backend';
import { runStatus, runBackendAction, DEFAULT_ADMIN_URL } from './cli/admin-client';
import { resolveConfigPath } from './config/load';
import { PROCESS_ENV } from './config/environment';
import { LemonadeError } from './errors';
import { versionLine } from './version';
import { exitWhenFlushed } from './obs/logger';

const out = (s: string): void => void process.stdout.write(s + '\n');

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const set = (p: Promise<number>): Promise<void> => p.then((c) => void (code = c));
  const adminUrl = process.env[PROCESS_ENV.adminUrl.name] ?? DEFAULT_ADMIN_URL;
  await yargs(argv)
    .scriptName('lemonade')
    .usage('$0 <command> [options]')
    .command(
      ['load-balancer', 'lb'],
      'run the load balancer in the foreground (or check its configuration with --validate)',
      (y) =>
        y
          .option('config', { alias: 'c', type: 'string', describe: 'configuration file (default $LEMONADE_LB_CONFIG, then /etc/lemonade/config.toml)' })
          .option('validate', { type: 'boolean', default: false, describe: 'check the configuration and exit: 0 valid, 1 invalid' })
          .option('json', { type: 'boolean', default: false, describe: 'with --validate: print the result as JSON' })
          .option('check-backends', { type: 'boolean', default: false, describe: 'with --validate: also try a TCP connect to each backend (warnings only)' }),
      (a) => {
        const source = resolveConfigPath(a.config, process.env);
        if ((a.json || a['check-backends']) && !a.validate) throw new UsageError('--json and --check-backends go with --validate');
        return set(a.validate ? runValidate({ path: source.path, explicit: source.explicit, json: a.json, checkBackends: a['check-backends'], env: process.env, out }) : runBalancer(source, process.env));
      },
    )
    .command(
      // `worker` was its name; it stays as an alias, though it is no data-plane worker process
      ['demo-backend', 'worker'],
      'run a demo/test HTTP backend (alias: worker)',
      (y) =>
        y
          .option('listen', { alias: 'a', type: 'string', demandOption: true, describe: 'address: host:port, :port or port' })
          .option('name', { alias: 'n', type: 'string', default: 'demo-backend', describe: 'name answered in every body' })
          .option('delay', { alias: 'd', type: 'number', default: 0, describe: 'delay before each answer, ms' })
          .option('jitter', { type: 'number', default: 0, describe: 'random extra delay up to this many ms' })
          .option('fail-rate', { type: 'number', default: 0, describe: 'share of requests answered 500 (0 to 1)' }),
      (a) => {
        for (const [k, v] of [['delay', a.delay], ['jitter', a.jitter], ['fail-rate', a['fail-rate']]] as const) {
          if (!Number.isFinite(v) || v < 0) throw new UsageError(`--${k} must be a number >= 0`);
        }
        if (a['fail-rate'] > 1) throw new UsageError('--fail-rate must be from 0 to 1');
        return set(
          startDemoBackend({ listen: a.listen, name: a.name, delayMs: a.delay, jitterMs: a.jitter, failRate: a['fail-rate'] }).then(
            (w) =>
              new Promise<number>((resolve) => {
                out(`demo-backend ${a.name} listening on ${w.address}`);
                const stop = (): void => void w.close().then(() => resolve(0));
                process.once('SIGTERM', stop);
                process.once('SIGINT', stop);
              }),
            (e: Error) => {
              process.stderr.write(`lemonade demo-backend: ${e.message}\n`);
              return 1;
            },
          ),
        );
      },
    )
    .command(
      'demo',
      'three demo backends (one slow) behind a balancer from config/demo.toml; Ctrl-C stops',
      (y) => y.option('config', { alias: 'c', type: 'string', describe: 'demo configuration (default config/demo.toml)' }),
      (a) => set(runDemo(a.config ?? findDemoConfig(), out)),
    )
    .command(
      'status',
      "print the backend table of a running balancer's admin API (a SERVICE column first, rows grouped by service)",
      (y) =>
        y
          .option('admin', { type: 'string', default: adminUrl, describe: 'admin API URL ($LEMONADE_ADMIN_URL)' })
          .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
          .option('cacert', { type: 'string', describe: 'PEM file of CAs to verify an https:// admin API against ($LEMONADE_ADMIN_CACERT)' }),
      (a) => set(runStatus(a.admin, a.json, out, { cacert: a.cacert ?? process.env[PROCESS_ENV.adminCacert.name] })),
    )
    .command(
      'backend <action> <name>',
      'drain, enable or disable one backend through the admin API (--service SVC names its service)',
      (y) =>
        y
          .positional('action', { choices: ['drain', 'enable', 'disable'] as const, demandOption: true })
          .positional('name', { type: 'string', demandOption: true, describe: "the backend's name" })
          .option('service', {
            alias: 's',
            type: 'string',
            describe: 'the service the backend belongs to; needed when NAME is in several services (without it the balancer answers 409 naming them)',
          })
          .option('admin', { type: 'string', default: adminUrl, describe: 'admin API URL ($LEMONADE_ADMIN_URL)' })
          // no default: --help would print the token's value
          .option('token', { type: 'string', describe: 'admin token (default $LEMONADE_ADMIN_TOKEN)' })
          .option('cacert', { type: 'string', describe: 'PEM file of CAs to verify an https:// admin API against ($LEMONADE_ADMIN_CACERT)' }),
      (a) => {
        if (a.service === '') throw new UsageError('--service needs a service name');
        return set(runBackendAction(a.admin, a.action, a.name, { service: a.service, token: a.token ?? process.env[PROCESS_ENV.adminToken.name], cacert: a.cacert ?? process.env[PROCESS_ENV.adminCacert.name] }, out));
      },
    )
    .demandCommand(1, 'give a command (see --help)')
    .strict()
    .version(versionLine())
    .help()
    .alias('help', 'h')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(msg);
    })
    .parseAsync();
  return code;
}

// a data-plane worker forked by a balancer with `[runtime] workers` > 1 (runtime/workers.ts)
if (cluster.isWorker) runDataPlaneWorker();
else main(process.argv.slice(2)).then(
  (code) => {
    // after the last log lines (the balancer's "stopped" line, the access log's last batch)
    exitWhenFlushed(code);
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`lemonade: ${e.message}\nRun "lemonade --help" for usage.\n`);
      process.exit(2);
    }
    if (e instanceof LemonadeError) {
      process.stderr.write(`lemonade: ${e.message}\n`);
      process.exit(e.exitCode);
    }
    process.stderr.write(`lemonade: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
