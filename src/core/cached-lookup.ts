// The connect-time side of the cache of host names without `resolve`: a `lookup` for
// net.connect that answers from the backend's cached addresses (core/endpoints.ts), so a connect
// by name makes no DNS query and does not queue on libuv's thread pool.

import type { LookupAddress, LookupOptions } from 'node:dns';
import { parseIp } from '../config/address';
import type { BackendConfig } from '../config/schema';
import { cachedAddresses } from './endpoints';

/** net.connect's `lookup` option (node:net's LookupFunction, declared here: core imports no node:net). */
export type LookupFunction = (hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => void;

/** 4 or 6 for an IP address in text (0: not one), as net.isIP answers. */
export function ipFamily(address: string): number {
  const ip = parseIp(address);
  return ip === null ? 0 : address.includes(':') ? 6 : 4;
}

const made = new WeakMap<readonly string[], LookupFunction>();

/** Every address the name gave was refused (the balancer's own): a connect fails, it never looks the name up itself. */
const noAddress: LookupFunction = ((host: string, _opts: LookupOptions, cb: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void => {
  const err = Object.assign(new Error(`${host}: no usable address (see /status dns)`), { code: 'ENOTFOUND' });
  process.nextTick(() => cb(err, ''));
}) as LookupFunction;

/** net.connect's `lookup` for this backend, or undefined (an IP address, or no answer yet: looked up as before). */
export function cachedLookup(spec: BackendConfig): LookupFunction | undefined {
  const addresses = cachedAddresses(spec);
  if (addresses === undefined) return undefined;
  if (addresses.length === 0) return noAddress;
  let f = made.get(addresses);
  if (f === undefined) {
    const list: LookupAddress[] = addresses.map((address) => ({ address, family: ipFamily(address) }));
    const first = list[0]!;
    // as dns.lookup: the callback is never called synchronously
    f = ((_host: string, opts: LookupOptions, cb: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void => {
      process.nextTick(() => (opts.all === true ? cb(null, list) : cb(null, first.address, first.family)));
    }) as LookupFunction;
    made.set(addresses, f);
  }
  return f;
}
