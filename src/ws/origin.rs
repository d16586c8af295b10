//! Which browser origins may open a WebSocket: `server.allowed_origins`.
//!
//! A browser sends `Origin` with every WebSocket upgrade, and nothing else stops a page
//! on another site from opening a socket to the gateway with the visitor's cookies or
//! stored token (cross-site WebSocket hijacking). Native apps and the raw TCP endpoint
//! send no `Origin` and are not affected. Origins are compared as RFC 6454 serializes
//! them, `scheme://host[:port]`: scheme and host without regard to case, the port with
//! the scheme's default filled in (`https://a.example` = `https://a.example:443`).
//! [`check_entry`] is what `Config::validate` runs on each configured entry;
//! [`allows`] is what the upgrade runs, allocation-free.

/// An origin taken apart: scheme, host, effective port (`None`: a scheme without a
/// known default port and none given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl Parts<'_> {
    fn same(&self, other: &Parts<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port == other.port
    }
}

/// The port a scheme implies when the origin names none (RFC 6454 leaves it out of the
/// serialization).
fn default_port(scheme: &str) -> Option<u16> {
    let is = |name: &str| scheme.eq_ignore_ascii_case(name);
    if is("http") || is("ws") {
        Some(80)
    } else if is("https") || is("wss") {
        Some(443)
    } else {
        None
    }
}

/// Parses `scheme://host[:port]`; anything else (a path, a query, user info, `null`,
/// `*`) is `None`.
fn parse(origin: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', '\\']) {
        return None;
    }
    if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // An IPv6 literal keeps its colons inside brackets.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&rest[..inside.len() + 2], port)
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() || host == "[]" || (!host.starts_with('[') && host.contains(':')) {
        return None;
    }
    let port = match port {
        None => default_port(scheme),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&n| n > 0)?)
        }
        Some(_) => return None,
    };
    Some(Parts { scheme, host, port })
}

/// Checks one `server.allowed_origins` entry; the error says what is wrong with it.
pub fn check_entry(entry: &str) -> Result<(), String> {
    match parse(entry) {
        Some(_) => Ok(()),
        None if entry == "*" => Err("`*` is not an origin: leave the list empty to allow any".into()),
        None => Err(format!("{entry:?} is not an origin: expected scheme://host[:port], no path")),
    }
}

/// Whether an upgrade with this `Origin` header may proceed: always without the header
/// or with an empty list, otherwise only when it is one of `allowed`. A header that is
/// not a `scheme://host[:port]` origin (`null`, from a sandboxed page or a file) matches
/// nothing.
pub fn allows(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = parse(origin) else { return false };
    allowed.iter().filter_map(|a| parse(a)).any(|a| a.same(&origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn compares_as_rfc_6454_serializes() {
        let allowed = list(&["https://chat.example.com", "http://localhost:3000", "https://[::1]:8443"]);
        for ok in [
            "https://chat.example.com",
            "HTTPS://Chat.Example.COM",
            "https://chat.example.com:443",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(allows(&allowed, Some(ok)), "{ok}");
        }
        for refused in [
            "http://chat.example.com",
            "https://chat.example.com:8443",
            "https://evil.example.com",
            "https://chat.example.com.evil.example",
            "https://chat.example.com/",
            "http://localhost:3001",
            "http://localhost",
            "null",
            "",
            "https://[::1]",
        ] {
            assert!(!allows(&allowed, Some(refused)), "{refused}");
        }
        assert!(allows(&allowed, None), "no Origin: a native client");
        assert!(allows(&[], Some("https://anything.example")), "empty list: any");
        assert!(allows(&[], Some("null")), "empty list: any");
    }

    #[test]
    fn entries_are_checked() {
        for ok in ["https://a.example", "http://localhost:3000", "app://x", "https://[2001:db8::1]:443"] {
            check_entry(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "*",
            "null",
            "a.example",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:",
            "https://a b",
            "https://*.example.com",
            "1https://a",
            "https://[::1",
        ] {
            assert!(check_entry(bad).is_err(), "{bad}");
        }
    }
}
