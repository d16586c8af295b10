//! Latency histograms (hdrhistogram, microseconds) and their JSON form. A report carries
//! the recorded buckets too, so reports from several client processes merge exactly.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Microsecond latencies from 1 us to 1 hour, 3 significant digits.
#[derive(Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Hist(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn add(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// `{count, p50_us, p90_us, p99_us, p999_us, max_us}`.
    pub fn summary(&self) -> Value {
        json!({
            "count": self.len(),
            "p50_us": self.quantile(0.5),
            "p90_us": self.quantile(0.9),
            "p99_us": self.quantile(0.99),
            "p999_us": self.quantile(0.999),
            "max_us": if self.0.is_empty() { 0 } else { self.0.max() },
        })
    }

    /// The recorded buckets, `[[value, count], ...]`, for merging in another process.
    pub fn buckets(&self) -> Value {
        Value::Array(self.0.iter_recorded().map(|v| json!([v.value_iterated_to(), v.count_at_value()])).collect())
    }

    /// The inverse of [`Hist::buckets`].
    pub fn from_buckets(v: &Value) -> Hist {
        let mut h = Hist::new();
        for pair in v.as_array().into_iter().flatten() {
            if let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) {
                let _ = h.0.record_n(value.max(1), count);
            }
        }
        h
    }

    /// `p50 p99 p999 max` of a [`Hist::summary`] as a table cell, milliseconds.
    pub fn cell(summary: &Value) -> String {
        let ms = |k: &str| summary[k].as_u64().unwrap_or(0) as f64 / 1000.0;
        format!("{:>8.2} {:>8.2} {:>8.2} {:>8.2}", ms("p50_us"), ms("p99_us"), ms("p999_us"), ms("max_us"))
    }
}

#[cfg(test)]
mod tests {
    use super::Hist;

    #[test]
    fn buckets_round_trip_and_merge() {
        let mut a = Hist::new();
        for v in [10, 20, 30, 1000, 5000] {
            a.record(v);
        }
        let b = Hist::from_buckets(&a.buckets());
        assert_eq!(b.len(), 5);
        assert_eq!(b.quantile(1.0), a.quantile(1.0));
        let mut c = a.clone();
        c.add(&b);
        assert_eq!(c.len(), 10);
    }
}
