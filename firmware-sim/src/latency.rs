//! PUBACK latencies of a fleet run: every sample kept (4 bytes each, so a
//! million acknowledged publishes cost 4 MB), percentiles exact by
//! nearest rank rather than approximated by a histogram.

use std::time::Duration;

/// Latency samples in microseconds, merged from every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Microseconds, in no particular order until [`Latencies::percentile`]
    /// sorts them. A sample above `u32::MAX` µs (71 minutes) is capped.
    samples_us: Vec<u32>,
    sorted: bool,
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies::default()
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.samples_us.push(us);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        if self.samples_us.is_empty() {
            *self = other;
            return;
        }
        self.samples_us.extend(other.samples_us);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples_us.is_empty()
    }

    /// The nearest-rank `p`-th percentile (0 < p <= 100): the smallest
    /// sample that at least `p` % of the samples do not exceed. `None`
    /// without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.samples_us.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples_us.sort_unstable();
            self.sorted = true;
        }
        let n = self.samples_us.len();
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        let us = self.samples_us[rank.clamp(1, n) - 1];
        Some(Duration::from_micros(u64::from(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(us: &[u64]) -> Latencies {
        let mut l = Latencies::new();
        for &u in us {
            l.record(Duration::from_micros(u));
        }
        l
    }

    fn us(p: Option<Duration>) -> Option<u64> {
        p.map(|d| d.as_micros() as u64)
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100 shuffled: p50 is the 50th value, p99 the 99th.
        let values: Vec<u64> = (1..=100).map(|i| (i * 37) % 100 + 1).collect();
        let mut l = of(&values);
        assert_eq!(us(l.percentile(50.0)), Some(50));
        assert_eq!(us(l.percentile(99.0)), Some(99));
        assert_eq!(us(l.percentile(100.0)), Some(100));
        assert_eq!(us(l.percentile(0.0)), Some(1), "p0 is the minimum");
        // Four samples: p50 is the 2nd, p99 the 4th (ceil(3.96)).
        let mut four = of(&[40, 10, 30, 20]);
        assert_eq!(us(four.percentile(50.0)), Some(20));
        assert_eq!(us(four.percentile(99.0)), Some(40));
    }

    #[test]
    fn empty_has_no_percentile_and_one_sample_is_every_percentile() {
        assert_eq!(Latencies::new().percentile(50.0), None);
        let mut one = of(&[7]);
        assert_eq!(us(one.percentile(1.0)), Some(7));
        assert_eq!(us(one.percentile(99.9)), Some(7));
    }

    #[test]
    fn merging_devices_keeps_every_sample() {
        let mut a = of(&[1, 2, 3]);
        a.percentile(50.0);
        a.extend(of(&[100, 200]));
        let mut merged = Latencies::new();
        merged.extend(a);
        assert_eq!(merged.len(), 5);
        assert_eq!(us(merged.percentile(50.0)), Some(3));
        assert_eq!(us(merged.percentile(99.0)), Some(200));
    }

    #[test]
    fn a_huge_sample_is_capped_not_wrapped() {
        let mut l = Latencies::new();
        l.record(Duration::from_secs(10_000));
        assert_eq!(us(l.percentile(50.0)), Some(u64::from(u32::MAX)));
    }
}
