// Groups a `perf record -g` profile of a TLS-terminating proxy by who does the work, for
// docs/performance.md ("Where TLS's cost goes"). Reads `perf script -F ip,sym,dso` on stdin
// (the proxy run with `node --perf-basic-prof` so JIT frames are named) and prints each group's
// share of the samples, by self time, and the top frames of each.
//
//   perf script -i perf.data -F ip,sym,dso | node scripts/bench/perf-groups.mjs [--top N]
//
// A sample is charged to its leaf frame; a leaf in libc (malloc, memcpy, locks) is charged to the
// first caller outside libc; a V8 builtin or a V8 runtime function (an inline cache's miss, a
// property lookup, a call through the API) to the JS function that called it. Groups:
//   openssl-crypto   OpenSSL's arithmetic: X25519, P-256, RSA, SHA-2, AES-GCM, HKDF, cleanse
//   openssl-other    the rest of OpenSSL: the handshake state machine, ASN.1, X509, providers,
//                    hash tables (statically linked into node: the C symbols with no namespace)
//   node-tls-c++     node::crypto (TLSWrap, SecureContext): Node's TLS glue in C++
//   node-stream-c++  node:: streams, handles, async wraps, and libuv
//   js-tls           Node's JS for TLS: _tls_wrap, tls, internal/tls
//   js-net-stream    Node's JS for sockets and streams: net, internal/streams, events, timers
//   js-ours          the bundle (dist/lemonade.js): session, routing, relay
//   js-other         other JS (node internals)
//   v8-gc            V8's garbage collector
//   v8-compiler      V8's optimizing compilers and deoptimizer (partly on their own threads)
//   v8-other         V8's runtime where no JS function called it
//   kernel           system calls and TCP (loopback), scheduling
//   haproxy / other  for a profile of HAProxy or nginx: their own code, and what is left

import { createInterface } from 'node:readline';

const top = Number(process.argv[process.argv.indexOf('--top') + 1]) || 8;

const CRYPTO = /x25519|curve25519|^fe_|^fe51|^fe64|ecp_nistz256|nistz256|^bn_|^BN_|bn_mul|mul_mont|sqr_mont|rsaz|^RSA_|^rsa_|ossl_rsa|ecdsa|ECDSA|^EC_|^ec_|ossl_ec|ec_GFp|sha256_block|sha512_block|sha1_block|^SHA|aesni|aes_|_aes|gcm|ghash|GCM|hkdf|HKDF|hmac|HMAC|OPENSSL_cleanse|^cmov|keccak|poly1305|chacha|^ossl_ecx|ecx_|^x448|constant_time|ossl_bn|BN_mod|DRBG|drbg|RAND_|rand_|ctr_|^ossl_prov_cipher|ossl_gcm/;

/** @param {{sym: string, dso: string}} f */
function isLibc(f) {
  return /libc\.so|libpthread|ld-linux|libstdc\+\+|libgcc/.test(f.dso) || /^(malloc|_int_malloc|_int_free|cfree|free|calloc|realloc|__mem|__str|memcpy|memmove|memset|pthread_|__pthread|__lll_|__GI___lll|unlink_chunk|malloc_consolidate|tcache|__libc_)/.test(f.sym);
}

/** @param {{sym: string, dso: string}} f */
function groupOf(f) {
  const { sym, dso } = f;
  if (dso.includes('kernel')) return 'kernel';
  if (sym.startsWith('JS:')) {
    if (/lemonade\.js/.test(sym)) return 'js-ours';
    if (/node:_tls_|node:tls|internal\/tls|node:internal\/crypto/.test(sym)) return 'js-tls';
    if (/node:net|internal\/streams|stream_base_commons|node:events|internal\/timers|node:stream|internal\/net|task_queues/.test(sym)) return 'js-net-stream';
    return 'js-other';
  }
  if (/haproxy/.test(dso)) return 'haproxy';
  if (/nginx/.test(dso)) return 'nginx';
  if (/libssl|libcrypto/.test(dso)) return CRYPTO.test(sym) ? 'openssl-crypto' : 'openssl-other';
  if (/\/node$|\bnode\b/.test(dso) && !sym.startsWith('Builtins_')) {
    if (sym.startsWith('node::crypto::')) return 'node-tls-c++';
    if (sym.startsWith('node::') || /^uv_|^uv__/.test(sym)) return 'node-stream-c++';
    if (/^v8::internal::(Heap|Scavenger|Mark|Sweep|Concurrent|MinorMark|Evacuat|Page|MemoryAllocator|LocalHeap|GC|Young|Full|Incremental)|Scavenge|MarkCompact|HeapObject.*Visit/.test(sym)) return 'v8-gc';
    if (/^v8::internal::(compiler|maglev|baseline|Compiler|OptimizingCompile|Deoptimizer|TranslatedState|Translated|wasm)|^v8::internal::.*(Compil|Deopt)/.test(sym)) return 'v8-compiler';
    if (sym.includes('::') || sym.startsWith('v8')) return 'v8-other';
    if (sym === '[unknown]' || sym === '') return 'other';
    return CRYPTO.test(sym) ? 'openssl-crypto' : 'openssl-other';
  }
  if (sym.startsWith('Builtins_')) return 'v8-other';
  if (/libuv/.test(dso)) return 'node-stream-c++';
  return 'other';
}

/** @param {{sym: string, dso: string}[]} stack leaf first */
function charge(stack) {
  let i = 0;
  while (i < stack.length - 1 && isLibc(stack[i])) i++;
  // a V8 builtin (an inline cache, a call stub) or runtime function is the work of the JS
  // function that called it (through builtins and V8's own frames only)
  const own = groupOf(stack[i]);
  if (stack[i].sym.startsWith('Builtins_') || own === 'v8-other') {
    for (let j = i + 1; j < stack.length; j++) {
      if (stack[j].sym.startsWith('JS:')) return { frame: stack[i], group: groupOf(stack[j]) };
      if (!stack[j].sym.startsWith('Builtins_') && groupOf(stack[j]) !== 'v8-other' && !isLibc(stack[j])) break;
    }
  }
  return { frame: stack[i], group: groupOf(stack[i]) };
}

const groups = new Map();
const frames = new Map();
let total = 0;
let stack = [];
const done = () => {
  if (stack.length === 0) return;
  const { frame, group } = charge(stack);
  total++;
  groups.set(group, (groups.get(group) ?? 0) + 1);
  const k = `${group}\t${frame.sym}`;
  frames.set(k, (frames.get(k) ?? 0) + 1);
  stack = [];
};
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const m = /^\s+[0-9a-f]+\s+(.*?)\s+\(([^)]*)\)\s*$/.exec(line);
  if (m) stack.push({ sym: m[1].replace(/\+0x[0-9a-f]+$/, ''), dso: m[2] });
  else done();
});
rl.on('close', () => {
  done();
  const pct = (n) => ((100 * n) / total).toFixed(1).padStart(5) + ' %';
  process.stdout.write(`${total} samples\n`);
  for (const [g, n] of [...groups].sort((a, b) => b[1] - a[1])) {
    process.stdout.write(`${pct(n)}  ${g}\n`);
    const mine = [...frames].filter(([k]) => k.startsWith(g + '\t')).sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [k, c] of mine) process.stdout.write(`           ${pct(c)}  ${k.split('\t')[1].slice(0, 110)}\n`);
  }
});
