//! The HTTP/1.1 upgrade on the client port, parsed with httparse.
//!
//! [`parse`] turns the bytes received so far into an [`Upgrade`] (or "need more", or a
//! [`Reject`] with the HTTP status to answer). Responses are small byte strings written
//! straight to the socket. Only `GET /ws` upgrades; every other path is 404.

use tungstenite::handshake::derive_accept_key;

/// Most headers a client may send.
const MAX_HEADERS: usize = 32;

/// A valid upgrade request, reduced to what the gateway needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// Token from `?token=` or `Authorization: Bearer`.
    pub token: Option<String>,
    /// `?platform=` (the token's `platform` claim wins over it).
    pub platform: Option<i32>,
    /// `?device_id=`.
    pub device_id: Option<String>,
    /// `Origin`, sent by browsers (checked against `server.allowed_origins`).
    pub origin: Option<String>,
}

/// A request we answer with an HTTP error and no upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status.
    pub status: u16,
    /// Short reason for the JSON body and the log.
    pub reason: &'static str,
}

impl Reject {
    fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// Parses the request at the front of `buf`: `Ok(None)` until it is complete, then the
/// upgrade and the number of bytes it took. `max` bounds the request size.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(Upgrade, usize)>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max => return Err(Reject::new(431, "request header too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::new(431, "too many headers")),
        Err(_) => return Err(Reject::new(400, "malformed HTTP request")),
    };
    if consumed > max {
        return Err(Reject::new(431, "request header too large"));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/ws" {
        return Err(Reject::new(404, "not found: the WebSocket endpoint is /ws"));
    }
    if req.method != Some("GET") {
        return Err(Reject::new(405, "method not allowed: use GET"));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Reject::new(426, "upgrade required: this endpoint speaks WebSocket"));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Reject::new(426, "unsupported WebSocket version: use 13"));
    }
    let key = match header("sec-websocket-key") {
        Some(k) if !k.is_empty() && k.len() <= 64 => k.to_string(),
        _ => return Err(Reject::new(400, "missing Sec-WebSocket-Key")),
    };
    // Kept whatever its bytes: a present `Origin` that is not an origin matches no list.
    let origin = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("origin"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
    let mut upgrade = Upgrade { key, token: None, platform: None, device_id: None, origin };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "token" if !v.is_empty() => upgrade.token = Some(v.to_string()),
            "platform" => upgrade.platform = v.parse().ok(),
            "device_id" if !v.is_empty() => upgrade.device_id = Some(v.chars().take(64).collect()),
            _ => {}
        }
    }
    if let Some(auth) = header("authorization") {
        let bearer = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "));
        if let Some(token) = bearer.map(str::trim).filter(|t| !t.is_empty()) {
            upgrade.token = Some(token.to_string());
        }
    }
    Ok(Some((upgrade, consumed)))
}

/// The 101 answer that completes the upgrade.
pub fn accept_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

/// An HTTP error with a JSON body `{"error": reason}`, `Retry-After` when given (s).
pub fn error_response(status: u16, reason: &str, retry_after_s: Option<u64>) -> Vec<u8> {
    let text = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 426 {
        head.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    if let Some(s) = retry_after_s {
        head.push_str(&format!("Retry-After: {s}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /ws?token=abc&platform=3&device_id=d1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn parses_a_good_upgrade_and_waits_for_more() {
        let (up, used) = parse(GOOD.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(used, GOOD.len());
        assert_eq!(up.token.as_deref(), Some("abc"));
        assert_eq!(up.platform, Some(3));
        assert_eq!(up.device_id.as_deref(), Some("d1"));
        assert_eq!(parse(&GOOD.as_bytes()[..40], 8192), Ok(None));
        let resp = String::from_utf8(accept_response(&up.key)).unwrap();
        assert!(resp.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn bearer_header_and_rejections() {
        let with_bearer =
            GOOD.replace("token=abc&", "").replace("Host: x\r\n", "Host: x\r\nAuthorization: Bearer xyz\r\n");
        assert_eq!(parse(with_bearer.as_bytes(), 8192).unwrap().unwrap().0.token.as_deref(), Some("xyz"));
        assert_eq!(parse(GOOD.as_bytes(), 8192).unwrap().unwrap().0.origin, None);
        let with_origin = GOOD.replace("Host: x\r\n", "Host: x\r\nOrigin: https://chat.example.com\r\n");
        let origin = parse(with_origin.as_bytes(), 8192).unwrap().unwrap().0.origin;
        assert_eq!(origin.as_deref(), Some("https://chat.example.com"));
        assert_eq!(parse(GOOD.replace("/ws?", "/nope?").as_bytes(), 8192).unwrap_err().status, 404);
        assert_eq!(parse(GOOD.replace("Upgrade: websocket\r\n", "").as_bytes(), 8192).unwrap_err().status, 426);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 8192).unwrap_err().status, 400);
        assert_eq!(parse(&[b'G'; 300], 256).unwrap_err().status, 431);
        assert_eq!(
            parse(b"GET /ws HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40)
                .unwrap_err()
                .status,
            431
        );
    }
}
