// Client-side CPU per received push, in Node: one client receives N pushes that a
// separate process sends through the admin API (so the sender's work is not counted);
// this process's CPU time (user + system, process.cpuUsage) from the first push to the
// last, divided by N. Twice: through the SDK (decode Packet and PushMsg, emit `push`),
// and a bare `ws` socket that only counts frames (the floor: Node's socket and ws).
// Then the SDK's own share alone: decoding the same push frame in a loop, no socket.
//
//   node bench/push-cpu.mjs [--pushes 50000] [--concurrency 16]
//   (gateway binary: $IMGW_BIN, default target/release/im-gateway)

import { fork } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { create, toBinary } from "@bufbuild/protobuf";
import { Client } from "../dist/index.js";
import { protoCodec } from "../dist/codec.js";
import { Command, PushMsgSchema } from "../dist/gen/im_pb.js";
import { ROOT, startGateway, token } from "../test/helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : dflt;
};
const PUSHES = arg("pushes", 50_000);
const CONCURRENCY = arg("concurrency", 16);
process.env.IMGW_BIN ??= path.join(ROOT, "target", "release", "im-gateway");

/** Receives PUSHES pushes through `open` (which calls back per push); CPU per push. */
async function measure(gw, user, open) {
  let got = 0;
  let cpu0;
  let t0;
  let done;
  const finished = new Promise((r) => (done = r));
  const close = await open(() => {
    got += 1;
    if (got === 1) {
      cpu0 = process.cpuUsage();
      t0 = process.hrtime.bigint();
    } else if (got === PUSHES) {
      done({ cpu: process.cpuUsage(cpu0), ns: process.hrtime.bigint() - t0 });
    }
  });
  const pusher = fork(path.join(here, "pusher.mjs"), [gw.admin, String(user), String(PUSHES), String(CONCURRENCY)]);
  const { cpu, ns } = await finished;
  await once(pusher, "exit");
  close();
  const us = (cpu.user + cpu.system) / (PUSHES - 1);
  return { cpu_us_per_push: Number(us.toFixed(2)), pushes_per_s: Math.round((PUSHES - 1) / (Number(ns) / 1e9)) };
}

const gw = await startGateway();
try {
  const sdk = await measure(gw, 1, async (onPush) => {
    const c = new Client({ url: gw.url, WebSocket, token: token(1) });
    c.on("push", onPush);
    await c.connect();
    return () => c.close();
  });
  const raw = await measure(gw, 2, async (onPush) => {
    const ws = new WebSocket(`${gw.url}?token=${token(2)}`);
    ws.binaryType = "arraybuffer";
    let first = true;
    ws.on("message", () => (first ? (first = false) : onPush())); // the first frame is the AuthResult
    await once(ws, "message");
    return () => ws.close();
  });
  // The SDK's decode of one push frame (Packet, then PushMsg), in a loop.
  const msg = create(PushMsgSchema, { msgId: 1n << 40n, senderId: 9n, type: 1, content: "x".repeat(64), serverTsUs: 1n << 50n });
  const frame = protoCodec.encode(Command.PUSH, 0n, PushMsgSchema, msg, "");
  const loops = 200_000;
  for (let i = 0; i < 20_000; i++) protoCodec.body(PushMsgSchema, protoCodec.decode(frame)); // warm-up
  const c0 = process.cpuUsage();
  for (let i = 0; i < loops; i++) protoCodec.body(PushMsgSchema, protoCodec.decode(frame));
  const c = process.cpuUsage(c0);
  const decode = { cpu_us_per_push: Number(((c.user + c.system) / loops).toFixed(2)), frame_bytes: frame.length };
  console.log(JSON.stringify({ node: process.version, pushes: PUSHES, concurrency: CONCURRENCY, sdk, raw_ws: raw, sdk_decode_only: decode }));
} finally {
  await gw.stop();
}
