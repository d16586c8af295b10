//! `GET /demo/`: the example chat page (`examples/web/`: two users in two tabs, talking
//! through UPSTREAM in embedded mode) and the JavaScript client it runs on
//! (`/demo/im-gateway.js`, the browser bundle of `clients/js`), compiled into the
//! binary. The page holds no data and is served without the admin token.
//!
//! `GET /demo/token?user=N` mints a token for the page, only while `auth.jwt_secret` is
//! the shipped development secret: that secret is public, so anyone can mint such
//! tokens anyway, and a gateway with a real key never hands one out (403: the page then
//! asks for a token minted with `im-gateway token`). The route sits behind the admin
//! token like the rest of the API.

use crate::config::{AuthConfig, DEV_JWT_SECRET};

/// The page (`examples/web/index.html`).
pub const PAGE: &str = include_str!("../examples/web/index.html");

/// The browser bundle of the JavaScript client (`npm run bundle` in `clients/js`).
pub const CLIENT_JS: &str = include_str!("../examples/web/im-gateway.js");

/// What the page may load: its own script and style, the client bundle, the token from
/// this origin, and a WebSocket to the gateway (another port, so any ws: or wss:).
pub const CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                       connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// Lifetime of a demo token, seconds.
const TOKEN_TTL_S: u64 = 3600;

/// Why no demo token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemoTokenError {
    #[error("demo tokens only exist while auth.jwt_secret is the development secret; mint one with `im-gateway token --user N`")]
    NotDevSecret,
    #[error("user must be a positive integer (?user=N)")]
    BadUser,
}

/// A token for `?user=N` signed with the development secret, if that is the key in use.
pub fn token(auth: &AuthConfig, query: &str) -> Result<String, DemoTokenError> {
    if auth.jwt_public_key.is_some() || auth.jwt_secret != DEV_JWT_SECRET {
        return Err(DemoTokenError::NotDevSecret);
    }
    let user = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("user="))
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|&u| u > 0)
        .ok_or(DemoTokenError::BadUser)?;
    let minter = crate::auth::Minter::from_config(auth).map_err(|_| DemoTokenError::NotDevSecret)?;
    Ok(minter.mint(user, Some(3), TOKEN_TTL_S))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_only_with_the_development_secret() {
        let mut auth = AuthConfig::default();
        assert_eq!(auth.jwt_secret, DEV_JWT_SECRET);
        assert!(token(&auth, "user=7").is_ok());
        assert_eq!(token(&auth, "user=0"), Err(DemoTokenError::BadUser));
        assert_eq!(token(&auth, "user=x"), Err(DemoTokenError::BadUser));
        auth.jwt_secret = "a-real-secret-of-this-deployment".into();
        assert_eq!(token(&auth, "user=7"), Err(DemoTokenError::NotDevSecret));
    }

    #[test]
    fn page_loads_only_its_own_files() {
        for needle in ["http://", "https://", "//cdn", "<link", "@import"] {
            assert!(!PAGE.contains(needle), "the demo page must not load anything from outside: found {needle:?}");
        }
        assert!(PAGE.contains("<script src=\"im-gateway.js\">"));
        assert!(CLIENT_JS.contains("ImGateway"));
    }
}
