// A reference, not the product: the least a Node TCP relay can cost per connection. It runs on
// libuv's handles directly (process.binding('tcp_wrap'), as net.js does inside), with no
// net.Socket, no stream and no event emitter per connection: accept, connect, read, write,
// shutdown on end of file, close when both directions are done. No timeouts, no limits, one
// backend, reads allocated by Node as for a plain Socket.
// Usage: node raw-proxy.mjs LISTEN_PORT BACKEND_HOST:BACKEND_PORT  (listens on 127.0.0.1)
const { TCP, TCPConnectWrap, constants } = process.binding('tcp_wrap');
const { WriteWrap, ShutdownWrap, streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync } = process.binding('stream_wrap');

const [listenPort, target] = process.argv.slice(2);
const i = target.lastIndexOf(':');
const host = target.slice(0, i);
const port = Number(target.slice(i + 1));
const UV_EOF = -4095;

/** Both handles of one connection; each handle knows its peer and how many writes it has queued. */
function relay(client) {
  const backend = new TCP(constants.SOCKET);
  const pair = { closed: false, client, backend };
  for (const [h, peer] of [[client, backend], [backend, client]]) {
    h.pair = pair;
    h.peer = peer;
    h.queued = 0;
    h.eof = false;
    h.setNoDelay(true);
  }
  const req = new TCPConnectWrap();
  req.oncomplete = afterConnect;
  req.pair = pair;
  if (backend.connect(req, host, port) !== 0) close(pair);
}

function close(pair) {
  if (pair.closed) return;
  pair.closed = true;
  pair.client.close();
  pair.backend.close();
}

function afterConnect(status, _handle, req) {
  const pair = req.pair;
  if (status < 0 || pair.closed) return close(pair);
  for (const h of [pair.client, pair.backend]) {
    h.onread = onRead;
    h.readStart();
  }
}

function onRead(arrayBuffer) {
  const nread = streamBaseState[kReadBytesOrError];
  const from = this;
  const pair = from.pair;
  if (pair.closed || nread === 0) return;
  if (nread > 0) {
    const out = from.peer;
    const buf = Buffer.from(arrayBuffer, streamBaseState[kArrayBufferOffset], nread);
    const req = new WriteWrap();
    req.handle = out;
    req.from = from;
    req.async = false;
    req.oncomplete = afterWrite;
    if (out.writeBuffer(req, buf) !== 0) return close(pair);
    if (streamBaseState[kLastWriteWasAsync]) {
      // the kernel did not take it all: keep the buffer alive and stop reading until it has
      req.buffer = buf;
      out.queued++;
      from.readStop();
    }
    return;
  }
  if (nread !== UV_EOF) return close(pair);
  from.eof = true;
  from.readStop();
  if (from.peer.eof) return close(pair);
  const req = new ShutdownWrap();
  req.handle = from.peer;
  req.oncomplete = afterShutdown;
  from.peer.shutdown(req);
}

function afterWrite(status) {
  const out = this.handle;
  const pair = out.pair;
  if (status < 0) return close(pair);
  if (--out.queued === 0 && !pair.closed && !this.from.eof) this.from.readStart();
}

function afterShutdown(status) {
  if (status < 0) close(this.handle.pair);
}

const server = new TCP(constants.SERVER);
const err = server.bind('127.0.0.1', Number(listenPort)) || server.listen(4096);
if (err) {
  process.stderr.write(`cannot listen on 127.0.0.1:${listenPort} (libuv error ${err})\n`);
  process.exit(1);
}
server.onconnection = (status, client) => {
  if (status === 0 && client) relay(client);
};
process.stdout.write(`listening ${listenPort}\n`);
process.on('SIGTERM', () => process.exit(0));
