//! Times between the collector (signed nanoseconds, unsigned milliseconds)
//! and PostgreSQL's `timestamptz` (signed microseconds since 2000-01-01).
//!
//! ```text
//! point time t (i64 ns)  ->  time  = floor(t / 1000) µs   timestamptz
//!                            nanos = t mod 1000 (0..=999)  smallint
//!                            (time, nanos) sorts like t; t = time * 1000 + nanos
//! received_at (u64 ms)   ->  ms * 1000 µs; beyond i64 µs (year 294247): 'infinity'
//! on the wire            :=  i64 BE, µs since 2000-01-01T00:00:00Z (binary timestamptz);
//!                            i64::MAX / i64::MIN are 'infinity' / '-infinity'
//! aggregate step (µs)    ->  interval: i64 BE µs, i32 BE days = 0, i32 BE months = 0
//! ```
//!
//! Every i64 nanosecond time and every i64 microsecond time fits in
//! PostgreSQL's range (4713 BC to 294276 AD), so no conversion can fail; a
//! gateway clock gone wild is kept as 'infinity' rather than refused.

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` as microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    /// 'infinity', and what a time beyond the i64 microsecond range saturates to.
    pub const INFINITY: Micros = Micros(i64::MAX);

    /// Milliseconds since the epoch; saturates far beyond any real clock.
    pub fn from_millis(ms: u64) -> Micros {
        Micros(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000))
    }

    /// Whole milliseconds since the epoch, 0 for earlier times.
    pub fn millis(self) -> u64 {
        u64::try_from(self.0.div_euclid(1000)).unwrap_or(0)
    }
}

/// Splits nanoseconds into the `(time, nanos)` columns.
pub fn split_nanos(nanos: i64) -> (Micros, i16) {
    // rem_euclid(1000) is 0..=999: it fits an i16.
    (
        Micros(nanos.div_euclid(1000)),
        nanos.rem_euclid(1000) as i16,
    )
}

/// Joins the `(time, nanos)` columns back; `None` when they do not come
/// from [`split_nanos`] (a row written by hand).
pub fn join_nanos(time: Micros, nanos: i16) -> Option<i64> {
    if !(0..1000).contains(&nanos) {
        return None;
    }
    // In i128: the earliest microsecond times 1000 is below i64::MIN.
    i64::try_from(i128::from(time.0) * 1000 + i128::from(nanos)).ok()
}

/// The `(time, nanos)` pair a range starts at (inclusive); `None` is the start of time.
pub fn lower_bound(from: Option<i64>) -> (Micros, i16) {
    split_nanos(from.unwrap_or(i64::MIN))
}

/// The `(time, nanos)` pair a range ends before (exclusive); `None` ends
/// after every storable time: `nanos` 1000 is above every stored `nanos`.
pub fn upper_bound(to: Option<i64>) -> (Micros, i16) {
    match to {
        Some(to) => split_nanos(to),
        None => (Micros(i64::MAX.div_euclid(1000)), 1000),
    }
}

/// A millisecond bound of a document range from a nanosecond one: stored
/// `received_at` values are whole milliseconds, so `ms >= ns / 1e6` exactly
/// when `ms >= ceil(ns / 1e6)` (as the sled store computes it).
pub fn millis_ceil(nanos: i64) -> u64 {
    (nanos.max(0) as u64).div_ceil(1_000_000)
}

impl ToSql for Micros {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wire = match self.0 {
            i64::MAX => i64::MAX,
            micros => micros.saturating_sub(POSTGRES_EPOCH_MICROS),
        };
        out.put_i64(wire);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Micros {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<Micros, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("timestamptz of {} bytes", raw.len()))?;
        Ok(Micros(match i64::from_be_bytes(bytes) {
            i64::MAX => i64::MAX,
            // Saturates -infinity (and anything else out of range) rather than wrapping.
            wire => wire.saturating_add(POSTGRES_EPOCH_MICROS),
        }))
    }

    accepts!(TIMESTAMPTZ);
}

/// An `interval` of whole microseconds, sent exactly (no float on the way,
/// as `n * interval '1 microsecond'` would take for n above 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalMicros(pub i64);

impl ToSql for IntervalMicros {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i64(self.0);
        out.put_i32(0); // days
        out.put_i32(0); // months
        Ok(IsNull::No)
    }

    accepts!(INTERVAL);
    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_are_inverse_and_keep_order() {
        let times = [
            i64::MIN,
            -1_001,
            -1_000,
            -999,
            -1,
            0,
            1,
            999,
            1_000,
            i64::MAX,
        ];
        for pair in times.windows(2) {
            assert!(split_nanos(pair[0]) < split_nanos(pair[1]), "{pair:?}");
        }
        for t in times {
            let (time, nanos) = split_nanos(t);
            assert!((0..1000).contains(&nanos));
            assert_eq!(join_nanos(time, nanos), Some(t));
        }
        assert_eq!(split_nanos(-1), (Micros(-1), 999));
        assert_eq!(join_nanos(Micros(0), 1000), None);
    }

    #[test]
    fn unbounded_ranges_hold_every_time() {
        assert!(lower_bound(None) <= split_nanos(i64::MIN));
        assert!(upper_bound(None) > split_nanos(i64::MAX));
        assert_eq!(upper_bound(Some(5_000)), (Micros(5), 0));
    }

    #[test]
    fn millis_saturate_instead_of_overflowing() {
        assert_eq!(
            Micros::from_millis(1_700_000_000_123).millis(),
            1_700_000_000_123
        );
        assert_eq!(Micros::from_millis(u64::MAX), Micros::INFINITY);
        assert_eq!(Micros(-5).millis(), 0);
        assert_eq!(millis_ceil(1_500_001), 2);
        assert_eq!(millis_ceil(-7), 0);
    }

    #[test]
    fn the_wire_form_counts_from_2000() {
        let mut out = BytesMut::new();
        Micros(POSTGRES_EPOCH_MICROS + 1)
            .to_sql(&Type::TIMESTAMPTZ, &mut out)
            .unwrap();
        assert_eq!(out.as_ref(), 1i64.to_be_bytes());
        let back = Micros::from_sql(&Type::TIMESTAMPTZ, &out).unwrap();
        assert_eq!(back, Micros(POSTGRES_EPOCH_MICROS + 1));
        let mut out = BytesMut::new();
        Micros::INFINITY
            .to_sql(&Type::TIMESTAMPTZ, &mut out)
            .unwrap();
        assert_eq!(out.as_ref(), i64::MAX.to_be_bytes());
        assert_eq!(
            Micros::from_sql(&Type::TIMESTAMPTZ, &out).unwrap(),
            Micros::INFINITY
        );
    }
}
