// The 30-line baseline: a plain Node TCP proxy built on socket.pipe(), one backend.
// Usage: node pipe-proxy.mjs LISTEN_PORT BACKEND_HOST:BACKEND_PORT  (listens on 127.0.0.1)
import net from 'node:net';

const [listenPort, target] = process.argv.slice(2);
const i = target.lastIndexOf(':');
const host = target.slice(0, i);
const port = Number(target.slice(i + 1));

const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const backend = net.connect({ host, port, allowHalfOpen: true });
  client.setNoDelay(true);
  backend.setNoDelay(true);
  client.pipe(backend);
  backend.pipe(client);
  const close = () => {
    client.destroy();
    backend.destroy();
  };
  client.on('error', close);
  backend.on('error', close);
  client.on('close', () => backend.destroy());
  backend.on('close', () => client.destroy());
});
server.listen({ host: '127.0.0.1', port: Number(listenPort), backlog: 4096 }, () => {
  process.stdout.write(`listening ${listenPort}\n`);
});
process.on('SIGTERM', () => process.exit(0));
