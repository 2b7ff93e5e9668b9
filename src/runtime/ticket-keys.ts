// The session ticket key every TLS context of the data plane holds, owned by the control plane so
// that each worker process has the same one (a ticket issued by one resumes on another): from
// [tls_tickets] key_file (the same on every balancer that reads the file; replaced when a reload
// reads another), or, without the file, random bytes made here and replaced every
// TICKET_KEY_ROTATION_MS. A change goes to `apply` (this process's terminators and the workers).
// node:tls keeps one key per context: a ticket of the key before a change gets a full handshake,
// and tickets live 2 hours (OpenSSL's default), so a rotation costs a full handshake only to the
// clients holding a ticket younger than that. The key is a secret: it is never logged.

import { randomBytes } from 'node:crypto';
import { TICKET_KEY_BYTES } from '../config/ticket-keys';

/** How often a key made here (no key_file) is replaced. */
export const TICKET_KEY_ROTATION_MS = 12 * 60 * 60 * 1000;

export interface TicketKeyDeps {
  /** every change of key (not the first: the owner reads `current` to build with it) */
  readonly apply: (key: Buffer) => void;
  readonly random?: (bytes: number) => Buffer;
  /** run `f` every `ms`; returns the cancel */
  readonly every?: (ms: number, f: () => void) => () => void;
}

function every(ms: number, f: () => void): () => void {
  const t = setInterval(f, ms);
  t.unref();
  return () => clearInterval(t);
}

export class TicketKeys {
  #key: Buffer;
  #stopRotating: (() => void) | null = null;
  readonly #random: (bytes: number) => Buffer;
  readonly #every: (ms: number, f: () => void) => () => void;

  /** `fileKey`: key_file's key as the load read it; null = make one here. */
  constructor(
    fileKey: Buffer | null,
    private readonly deps: TicketKeyDeps,
  ) {
    this.#random = deps.random ?? randomBytes;
    this.#every = deps.every ?? every;
    this.#key = fileKey ?? this.#made();
  }

  /** The key in use (48 bytes). */
  get current(): Buffer {
    return this.#key;
  }

  /** A reload's key_file key (null: none named). True when the key in use changed. */
  reloaded(fileKey: Buffer | null): boolean {
    if (fileKey !== null) {
      this.#stopRotating?.();
      this.#stopRotating = null;
      if (fileKey.equals(this.#key)) return false;
      this.#set(fileKey);
      return true;
    }
    // no file now: a key made here goes on; after a file's key, a new one (the file's is not kept)
    if (this.#stopRotating !== null) return false;
    this.#set(this.#made());
    return true;
  }

  stop(): void {
    this.#stopRotating?.();
    this.#stopRotating = null;
  }

  #made(): Buffer {
    this.#stopRotating ??= this.#every(TICKET_KEY_ROTATION_MS, () => this.#set(this.#random(TICKET_KEY_BYTES)));
    return this.#random(TICKET_KEY_BYTES);
  }

  #set(key: Buffer): void {
    this.#key = key;
    this.deps.apply(key);
  }
}
