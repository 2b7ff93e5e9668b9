// `lemonade load-balancer --config FILE`: run the balancer in the foreground.

import { loadConfig, type ConfigSource, type Env } from '../config/load';
import { App } from '../app';
import { createLogger, exitOnUncaught } from '../obs/logger';
import { VERSION } from '../version';

/** Resolves with the exit code once the balancer has stopped. Throws LemonadeError on bad input. */
export async function runBalancer(source: ConfigSource, env: Env): Promise<number> {
  const loaded = loadConfig(source, env);
  const logger = createLogger({ level: env['LEMONADE_LOG'] || 'info', format: env['LEMONADE_LOG_FORMAT'] || 'json' });
  exitOnUncaught(logger);
  const app = new App({ loaded, logger, version: VERSION, configPath: loaded.path === '(environment)' ? '' : source.path, env });
  const exited = app.exited();
  // a second signal while starting ends the start's wait too
  await Promise.race([app.start(), exited]);
  return exited;
}
