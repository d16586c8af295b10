// @im-gateway/client: the im-gateway client for browsers and Node (README.md).
export { Client } from "./client.js";
export type {
  ClientEvents,
  ClientOptions,
  ClientState,
  Disconnect,
  Id,
  Outgoing,
  Reconnecting,
  Session,
  TokenSource,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Backoff, retryAfterFromHeader, retryAfterFromReason, type BackoffOptions } from "./backoff.js";
export { ClientError, CloseCode, ErrorCode, type ErrorKind } from "./errors.js";
export { Command, type AuthResult, type PushMsg, type UpstreamResult } from "./gen/im_pb.js";
