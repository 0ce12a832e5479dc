// The example app: one script, two roles.
//   node app/service.mjs serve NAME PORT [UPSTREAM_URL ...]
//     an HTTP server answering {"pod": NAME, "upstreams": [...]} after calling each upstream
//   node app/service.mjs load URL INTERVAL_MS
//     a client calling URL every INTERVAL_MS, printing a line per 20 requests:
//     "20 requests, N failed; M in all, F failed; last: {...}"
// Connections are kept alive, as real HTTP clients keep them.
import { createServer, get, Agent } from 'node:http';

const [role, ...args] = process.argv.slice(2);
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

function fetchJson(url) {
  return new Promise((resolve) => {
    const req = get(url, { agent, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        try { resolve(JSON.parse(body)); } catch { resolve({ error: `bad reply from ${url}` }); }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: `${url}: ${e.code ?? e.message}` }));
  });
}

if (role === 'serve') {
  const [name, port, ...upstreams] = args;
  createServer(async (req, res) => {
    const calls = [];
    for (const u of upstreams) calls.push(await fetchJson(u));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ pod: name, upstreams: calls }));
  }).listen(Number(port), () => console.log(`${name} serving on ${port}`));
} else if (role === 'load') {
  const [url, interval] = args;
  let n = 0;
  let failed = 0;
  let windowFailed = 0;
  setInterval(async () => {
    const r = await fetchJson(url);
    n++;
    if (r.error) { failed++; windowFailed++; }
    if (n % 20 === 0) {
      console.log(`20 requests, ${windowFailed} failed; ${n} in all, ${failed} failed; last: ${JSON.stringify(r)}`);
      windowFailed = 0;
    }
  }, Number(interval));
} else {
  console.error('usage: service.mjs serve NAME PORT [UPSTREAM_URL ...] | load URL INTERVAL_MS');
  process.exit(2);
}
