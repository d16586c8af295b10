//! `GET /dashboard`: the per-core dashboard, one self-contained HTML page (inline CSS
//! and JS, canvas charts drawn by hand) compiled into the binary. It polls `/v1/stats`
//! on the same origin and fetches nothing else; the Content-Security-Policy sent with it
//! forbids anything else. The page itself holds no data, so it is served without the
//! admin token; with one configured, open `/dashboard#token=..` and the page sends it to
//! `/v1/stats` as a bearer header (the fragment never leaves the browser).

/// The page (`src/dashboard.html`).
pub const PAGE: &str = include_str!("dashboard.html");

/// What the page may load: its own inline script and style, and `/v1/stats`.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                       connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        for needle in ["http://", "https://", "//cdn", "<link", "src=\"", "@import"] {
            assert!(!PAGE.contains(needle), "the dashboard must not load anything from outside: found {needle:?}");
        }
        assert!(PAGE.contains("fetch(\"/v1/stats\""));
        assert!(PAGE.contains("CLUSTER: other nodes"));
    }
}
