// Which buffer a relay reads into, for every transport (one policy). A transport reads into a
// buffer it is given and writes what it read to the other side; a write keeps a reference to its
// bytes while they are queued (in a Writable's buffer, or in libuv when the kernel took only part
// of them), so a buffer must not be read into again until the write from it is done:
// - every reader starts on SHARED, one buffer for all: a read into it is always copied out before
//   the write, so nothing ever references it and any reader may read into it at any time. A small
//   read's copy comes from Buffer's pool (cheap), and an idle connection holds no buffer at all.
// - a big read (one that a copy could not take from the pool) suggests more are coming: the
//   reader moves to a buffer of its own (the copy is made into it), written from without a copy.
//   When the write completed at once, nothing references that buffer any more: it is read into
//   again. Otherwise it stays with the queued write (and is collected after it) and the reader
//   gets a fresh one: copying instead would cost a memcpy per read even when the kernel takes
//   everything at once, the usual case.
// - a small read sends the reader back to SHARED, so a connection holds its own 64 KiB only while
//   its reads are big (a copy of a small read costs little).
//
// Per read: `const taken = takeRead(buf, n)`, write `bytesOf(taken, n)`, then read next into
// `nextRead(taken, n, queued)`.

export const READ_SIZE = 64 * 1024;
/** Buffer.allocUnsafe takes smaller sizes from its pool */
export const SMALL_READ = Buffer.poolSize >>> 1;
export const SHARED = Buffer.allocUnsafeSlow(READ_SIZE);

/** The buffer a read of `n` bytes into `buf` is written from: a copy when `buf` is SHARED (a pool copy of a small read, else a buffer of the reader's own), else `buf`. */
export function takeRead(buf: Buffer, n: number): Buffer {
  if (buf !== SHARED) return buf;
  if (n < SMALL_READ) {
    const copy = Buffer.allocUnsafe(n);
    SHARED.copy(copy, 0, 0, n);
    return copy;
  }
  const own = Buffer.allocUnsafeSlow(READ_SIZE);
  SHARED.copy(own, 0, 0, n);
  return own;
}

/** The first `n` bytes of `b` (b itself when that is all of it). */
export function bytesOf(b: Buffer, n: number): Buffer {
  return n === b.length ? b : b.subarray(0, n);
}

/** Where the next read goes, after `n` bytes were written from `taken` (`queued`: the write is not done yet). */
export function nextRead(taken: Buffer, n: number, queued: boolean): Buffer {
  return n < SMALL_READ ? SHARED : queued ? Buffer.allocUnsafeSlow(READ_SIZE) : taken;
}
