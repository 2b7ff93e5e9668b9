// Stand-in HTTP backend for `npm run bench` when nginx is not installed: keep-alive,
// a fixed small response. Usage: node http-backend.mjs PORT (listens on 127.0.0.1)
import http from 'node:http';

const body = Buffer.from('hello from node\n');
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 300_000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.listen({ host: '127.0.0.1', port: Number(process.argv[2]), backlog: 4096 });
process.on('SIGTERM', () => process.exit(0));
