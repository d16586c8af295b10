// What the client reports: one error class with a `kind`, so an `error` listener can
// switch on it, and the close codes the gateway uses.

/** Close codes of the gateway (docs/PROTOCOL.md). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  TOO_BIG: 1009,
  AUTH_FAILED: 4001,
  AUTH_TIMEOUT: 4002,
  KICKED: 4003,
  RATE_LIMITED: 4004,
  PROTOCOL_ERROR: 4005,
  IDLE_TIMEOUT: 4008,
  TOO_SLOW: 4009,
} as const;

/** ERROR codes the gateway sends in answer to a request (`Error.code`). */
export const ErrorCode = {
  BAD_REQUEST: 1,
  ALREADY_AUTHENTICATED: 2,
  UPSTREAM_UNAVAILABLE: 3,
  RATE_LIMITED: 4,
  RECEIVER_OFFLINE: 5,
} as const;

export type ErrorKind =
  /** The socket could not be opened, or the upgrade failed (see `status`). */
  | "connect"
  /** An established connection's socket failed (network, or an invalid WebSocket
   * frame from the server). */
  | "socket"
  /** No upgrade or no AUTH result within `connectTimeoutMs`, or a request unanswered. */
  | "timeout"
  /** The server sent something that is not one protobuf Packet (or a text frame). */
  | "protocol"
  /** The token callback failed or returned nothing. */
  | "token"
  /** The server answered a request with ERROR (`code`, `message`). */
  | "server"
  /** The connection went away before the request was answered. */
  | "disconnected"
  /** `send` while not connected. */
  | "not_connected"
  /** One of the application's listeners threw. */
  | "listener";

export class ClientError extends Error {
  readonly kind: ErrorKind;
  /** ERROR code from the server (`server`), or the HTTP status of a refused upgrade
   * (`connect`, when the WebSocket implementation shows it). */
  readonly code?: number;

  constructor(kind: ErrorKind, message: string, code?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ClientError";
    this.kind = kind;
    this.code = code;
  }
}
