// Packets on the wire: one protobuf `Packet` per binary WebSocket frame
// (proto/im.proto, generated into ./gen by `npm run gen`).
//
// The codec is the one seam the JSON sub-protocol (`im.v1.json`, text frames) will use
// once the gateway speaks it: `Codec` is what the client calls, `protoCodec` the binary
// default.

import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Command, HeaderSchema, PacketSchema } from "./gen/im_pb.js";

/** A decoded packet: header fields and the raw body. */
export interface Frame {
  command: Command;
  seq: bigint;
  body: Uint8Array;
}

export interface Codec {
  /** `Sec-WebSocket-Protocol` to ask for, if any. */
  readonly subprotocol?: string;
  encode<D extends DescMessage>(command: Command, seq: bigint, schema: D | undefined, body: MessageShape<D> | undefined, clientId: string): Uint8Array;
  /** Throws on anything that is not one packet. */
  decode(data: ArrayBuffer | Uint8Array): Frame;
  body<D extends DescMessage>(schema: D, frame: Frame): MessageShape<D>;
}

const EMPTY = new Uint8Array(0);

export const protoCodec: Codec = {
  encode(command, seq, schema, body, clientId) {
    const packet = create(PacketSchema, {
      header: create(HeaderSchema, { command, version: 1, clientId, seq }),
      body: schema && body ? toBinary(schema, body) : EMPTY,
    });
    return toBinary(PacketSchema, packet);
  },
  decode(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const packet = fromBinary(PacketSchema, bytes);
    if (!packet.header) throw new Error("packet without a header");
    return { command: packet.header.command, seq: packet.header.seq, body: packet.body };
  },
  body(schema, frame) {
    return fromBinary(schema, frame.body);
  },
};
