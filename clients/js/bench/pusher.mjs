// The push sender of bench/push-cpu.mjs (its own process): N pushes to one user through
// POST /v1/push over keep-alive connections, `concurrency` requests in flight.
import http from "node:http";

const [admin, user, n, concurrency] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(concurrency) });
const url = new URL(`${admin}/v1/push`);
let next = 0;
function post(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on("end", resolve);
      },
    );
    req.on("socket", (s) => s.setNoDelay(true));
    req.on("error", reject);
    req.end(body);
  });
}
async function worker() {
  while (next < Number(n)) {
    const id = ++next;
    await post(JSON.stringify({ user_ids: [Number(user)], msg: { msg_id: id, sender_id: 9, type: 1, content: "x".repeat(64) } }));
  }
}
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
agent.destroy();
