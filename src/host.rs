//! Host tuning check: compares the kernel settings that bound how many connections
//! this host can hold (read from `/proc/sys`) with the recommendations in
//! `config/sysctl.d/99-im-gateway.conf` (built in, so the binary and the shipped file
//! never disagree), and logs one warning line naming the settings that fall short
//! (each with its values at `debug`; `scripts/tune-host.sh --check` prints the table).
//!
//! [`warn_below_recommendations`] is called once by `Gateway::start`. It only reads and
//! logs; `scripts/tune-host.sh --apply` is how a host is changed. The comparison itself
//! ([`check`]) is a pure function of the recommendations and a reader, for tests.

use tracing::{debug, info, warn};

/// The shipped recommendations (sysctl.d syntax: `key = value`, `#` comments).
pub const RECOMMENDED: &str = include_str!("../config/sysctl.d/99-im-gateway.conf");

/// Test hook: `key=value,key=value` replaces recommended values, so an integration
/// test can ask for more than any host has and see the warning. Not for production.
pub const OVERRIDE_ENV: &str = "IM_GATEWAY_HOST_RECOMMEND";

/// How the current value must compare with the recommended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Field `i` (whitespace-separated, 0-based) at least the recommended field `i`.
    AtLeast(usize),
    /// Field `i` at most the recommended field `i` (a timeout, say).
    AtMost(usize),
    /// A `low high` range at least as wide as the recommended one.
    Span,
    /// Exactly the recommended value.
    Equal,
}

/// The rule for each setting this module checks. Settings of the file not listed here
/// (buffer defaults, which are tuning rather than limits) are left to
/// `scripts/tune-host.sh --check`.
pub fn rule(key: &str) -> Option<Rule> {
    Some(match key {
        "net.core.somaxconn"
        | "net.ipv4.tcp_max_syn_backlog"
        | "fs.nr_open"
        | "fs.file-max"
        | "net.core.netdev_max_backlog"
        | "net.core.rmem_max"
        | "net.core.wmem_max" => Rule::AtLeast(0),
        // The high mark is the hard ceiling of TCP memory for every socket together.
        "net.ipv4.tcp_mem" => Rule::AtLeast(2),
        "net.ipv4.tcp_fin_timeout" => Rule::AtMost(0),
        "net.ipv4.ip_local_port_range" => Rule::Span,
        "net.ipv4.tcp_tw_reuse" | "net.ipv4.tcp_migrate_req" => Rule::Equal,
        _ => return None,
    })
}

/// One setting that falls short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// sysctl name, e.g. `net.core.somaxconn`.
    pub key: String,
    /// The host's value (whitespace normalised), or `unreadable`.
    pub current: String,
    /// The recommended value.
    pub recommended: String,
}

/// `key = value` pairs of a sysctl.d file, in order.
pub fn parse_recommendations(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), normalise(v)))
        .collect()
}

fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn fields(v: &str) -> Vec<u64> {
    v.split_whitespace().map_while(|f| f.parse().ok()).collect()
}

/// True when `current` satisfies `rule` against `recommended`. Values that do not parse
/// as numbers fail (and so are reported).
pub fn satisfies(rule: Rule, current: &str, recommended: &str) -> bool {
    let (cur, rec) = (fields(current), fields(recommended));
    match rule {
        Rule::AtLeast(i) => matches!((cur.get(i), rec.get(i)), (Some(c), Some(r)) if c >= r),
        Rule::AtMost(i) => matches!((cur.get(i), rec.get(i)), (Some(c), Some(r)) if c <= r),
        Rule::Span => match (&cur[..], &rec[..]) {
            ([cl, ch], [rl, rh]) => ch.saturating_sub(*cl) >= rh.saturating_sub(*rl),
            _ => false,
        },
        Rule::Equal => !cur.is_empty() && cur == rec,
    }
}

/// The checked settings whose current value (from `read`, `None` = unreadable) falls
/// short of `recommendations`.
pub fn check(recommendations: &[(String, String)], read: impl Fn(&str) -> Option<String>) -> Vec<Shortfall> {
    recommendations
        .iter()
        .filter_map(|(key, recommended)| {
            let rule = rule(key)?;
            let current = read(key).map(|v| normalise(&v));
            let ok = current.as_deref().is_some_and(|c| satisfies(rule, c, recommended));
            (!ok).then(|| Shortfall {
                key: key.clone(),
                current: current.unwrap_or_else(|| "unreadable".into()),
                recommended: recommended.clone(),
            })
        })
        .collect()
}

/// Reads a sysctl from `/proc/sys`.
pub fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).ok()
}

/// The shipped recommendations with [`OVERRIDE_ENV`] applied.
pub fn recommendations() -> Vec<(String, String)> {
    let mut recs = parse_recommendations(RECOMMENDED);
    if let Ok(spec) = std::env::var(OVERRIDE_ENV) {
        for (k, v) in spec.split(',').filter_map(|kv| kv.split_once('=')) {
            let (k, v) = (k.trim(), normalise(v));
            match recs.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => recs.push((k.to_string(), v)),
            }
        }
    }
    recs
}

/// Logs one warning naming the host settings below recommendation (none on a tuned
/// host: an `info` line then), and each of them with its current and recommended value
/// at `debug`. Returns how many there were.
///
/// One line, not one per setting: a developer's laptop falls short on about ten, and
/// ten warnings at every start bury the ones that matter.
pub fn warn_below_recommendations() -> usize {
    let shortfalls = check(&recommendations(), read_sysctl);
    for s in &shortfalls {
        debug!(setting = %s.key, current = %s.current, recommended = %s.recommended, "host setting below recommendation");
    }
    if shortfalls.is_empty() {
        info!("host settings meet the recommendations");
        return 0;
    }
    let settings: Vec<&str> = shortfalls.iter().map(|s| s.key.as_str()).collect();
    warn!(
        count = settings.len(),
        settings = %settings.join(", "),
        "{} host settings below the recommendation for ~1M connections; `scripts/tune-host.sh --check` compares them \
         (config/sysctl.d/99-im-gateway.conf, `--apply` to set them)",
        settings.len()
    );
    settings.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn rules_compare_the_right_way() {
        assert!(satisfies(Rule::AtLeast(0), "65535", "65535"));
        assert!(satisfies(Rule::AtLeast(0), "100000", "65535"));
        assert!(!satisfies(Rule::AtLeast(0), "4096", "65535"));
        assert!(satisfies(Rule::AtLeast(2), "1 2 1572864", "786432 1048576 1572864"));
        assert!(!satisfies(Rule::AtLeast(2), "786432 1048576 575796", "786432 1048576 1572864"));
        assert!(satisfies(Rule::AtMost(0), "15", "15") && satisfies(Rule::AtMost(0), "10", "15"));
        assert!(!satisfies(Rule::AtMost(0), "60", "15"));
        assert!(!satisfies(Rule::Span, "2000 65000", "1024 65535"));
        assert!(satisfies(Rule::Span, "1024 65535", "1024 65535"));
        assert!(!satisfies(Rule::Span, "32768 60999", "1024 65535"));
        assert!(satisfies(Rule::Equal, "1", "1") && !satisfies(Rule::Equal, "2", "1"));
        assert!(!satisfies(Rule::AtLeast(0), "lots", "1") && !satisfies(Rule::Equal, "", ""));
    }

    #[test]
    fn shipped_file_parses_and_every_checked_key_has_a_rule() {
        let recs = parse_recommendations(RECOMMENDED);
        let keys: Vec<&str> = recs.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "fs.nr_open",
            "fs.file-max",
            "net.core.netdev_max_backlog",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_tw_reuse",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
        ] {
            assert!(keys.contains(&k), "{k} missing from the sysctl file");
        }
        let range = recs.iter().find(|(k, _)| k == "net.ipv4.ip_local_port_range").unwrap();
        assert_eq!(range.1, "1024 65535");
        // The recommendations satisfy themselves.
        let map: HashMap<String, String> = recs.iter().cloned().collect();
        assert_eq!(check(&recs, |k| map.get(k).cloned()), vec![]);
    }

    #[test]
    fn check_reports_each_shortfall_once_with_both_values() {
        let recs = parse_recommendations(
            "# c\nnet.core.somaxconn = 65535\nfs.nr_open=2097152\nnet.ipv4.tcp_fin_timeout = 15\n\
             net.ipv4.ip_local_port_range = 1024\t65535\nnet.ipv4.tcp_rmem = 4096 16384 4194304\n",
        );
        let host = HashMap::from([
            ("net.core.somaxconn", "4096\n"),
            ("fs.nr_open", "2097152\n"),
            ("net.ipv4.tcp_fin_timeout", "60\n"),
            ("net.ipv4.tcp_rmem", "4096\t131072\t6291456\n"),
        ]);
        let found = check(&recs, |k| host.get(k).map(|v| v.to_string()));
        let got: Vec<(&str, &str, &str)> =
            found.iter().map(|s| (s.key.as_str(), s.current.as_str(), s.recommended.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("net.core.somaxconn", "4096", "65535"),
                ("net.ipv4.tcp_fin_timeout", "60", "15"),
                ("net.ipv4.ip_local_port_range", "unreadable", "1024 65535"),
            ]
        );
    }
}
