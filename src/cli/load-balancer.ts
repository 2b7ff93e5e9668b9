// `lemonade load-balancer --config FILE`: run the balancer in the foreground.

import { loadConfig, type ConfigSource, type Env } from '../config/load';
import { PROCESS_ENV } from '../config/environment';
import { App } from '../app';
import { createLogger, exitOnUncaught } from '../obs/logger';
import { VERSION } from '../version';

/** Resolves with the exit code once the balancer has stopped. Throws LemonadeError on bad input. */
export async function runBalancer(source: ConfigSource, env: Env): Promise<number> {
  const loaded = loadConfig(source, env);
  const logger = createLogger({ level: env[PROCESS_ENV.log.name] || PROCESS_ENV.log.def, format: env[PROCESS_ENV.logFormat.name] || PROCESS_ENV.logFormat.def });
  exitOnUncaught(logger);
  const app = new App({ loaded, logger, version: VERSION, configPath: loaded.path === '(environment)' ? '' : source.path, env });
  const exited = app.exited();
  // a second signal while starting ends the start's wait too
  await Promise.race([app.start(), exited]);
  return exited;
}
