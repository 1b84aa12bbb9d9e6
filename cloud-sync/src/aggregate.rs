//! Folds a time-ordered series into buckets of a fixed step aligned to
//! multiples of the step since the epoch, as `GET .../aggregates` returns
//! them. Backends that cannot aggregate natively stream their points through
//! [`Buckets`], so memory is bounded by the number of non-empty buckets.

use telemetry::Value;

use crate::model::Bucket;

/// Start of the bucket holding `time_ns`: the largest multiple of `step_ns`
/// not after it. Saturates at the ends of the `i64` range.
pub fn bucket_start(time_ns: i64, step_ns: i64) -> i64 {
    let step = i128::from(step_ns.max(1));
    let start = i128::from(time_ns).div_euclid(step) * step;
    start.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// How many buckets of `step_ns` the window `[from_ns, to_ns)` touches.
pub fn bucket_count(from_ns: i64, to_ns: i64, step_ns: i64) -> u128 {
    if to_ns <= from_ns {
        return 0;
    }
    let step = i128::from(step_ns.max(1));
    let first = i128::from(from_ns).div_euclid(step);
    let last = (i128::from(to_ns) - 1).div_euclid(step);
    (last - first + 1) as u128
}

/// The numeric reading of a value for min/max/avg: floats as is, bools as 0/1.
pub fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Float(v) => Some(*v),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(_) | Value::Bytes(_) => None,
    }
}

/// Accumulates points given in time order into buckets.
#[derive(Debug)]
pub struct Buckets {
    step_ns: i64,
    done: Vec<Bucket>,
    current: Option<Accumulator>,
}

#[derive(Debug)]
struct Accumulator {
    start_ns: i64,
    count: u64,
    numeric_count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: Value,
}

impl Accumulator {
    fn finish(self) -> Bucket {
        let any = self.numeric_count > 0;
        Bucket {
            start_ns: self.start_ns,
            count: self.count,
            min: any.then_some(self.min),
            max: any.then_some(self.max),
            avg: any.then(|| self.sum / self.numeric_count as f64),
            last: self.last,
        }
    }
}

impl Buckets {
    /// `step_ns` must be positive.
    pub fn new(step_ns: i64) -> Self {
        Buckets {
            step_ns: step_ns.max(1),
            done: Vec::new(),
            current: None,
        }
    }

    /// Adds a point; `time_ns` must not be before the previous one.
    pub fn push(&mut self, time_ns: i64, value: Value) {
        let start_ns = bucket_start(time_ns, self.step_ns);
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.start_ns != start_ns)
        {
            if let Some(finished) = self.current.take() {
                self.done.push(finished.finish());
            }
        }
        let acc = self.current.get_or_insert_with(|| Accumulator {
            start_ns,
            count: 0,
            numeric_count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: value.clone(),
        });
        acc.count += 1;
        if let Some(v) = numeric(&value) {
            acc.numeric_count += 1;
            acc.sum += v;
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
        }
        acc.last = value;
    }

    /// The non-empty buckets, in time order.
    pub fn finish(mut self) -> Vec<Bucket> {
        if let Some(last) = self.current.take() {
            self.done.push(last.finish());
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn buckets_align_to_the_epoch() {
        assert_eq!(bucket_start(0, 60 * S), 0);
        assert_eq!(bucket_start(59 * S, 60 * S), 0);
        assert_eq!(bucket_start(60 * S, 60 * S), 60 * S);
        assert_eq!(bucket_start(-1, 60 * S), -60 * S);
        assert_eq!(bucket_start(i64::MIN, 7 * S), i64::MIN);
    }

    #[test]
    fn bucket_count_covers_the_half_open_window() {
        assert_eq!(bucket_count(0, 60 * S, 60 * S), 1);
        assert_eq!(bucket_count(0, 60 * S + 1, 60 * S), 2);
        assert_eq!(bucket_count(30 * S, 90 * S, 60 * S), 2);
        assert_eq!(bucket_count(5, 5, 1), 0);
        assert_eq!(bucket_count(i64::MIN, i64::MAX, 1), u64::MAX as u128);
    }

    #[test]
    fn folds_min_max_avg_count_last() {
        let mut b = Buckets::new(10 * S);
        b.push(S, Value::Float(3.0));
        b.push(2 * S, Value::Float(1.0));
        b.push(9 * S, Value::Bool(true));
        b.push(25 * S, Value::String("x".into()));
        b.push(26 * S, Value::Float(-4.0));
        b.push(41 * S, Value::Bytes(vec![1]));
        let buckets = b.finish();
        assert_eq!(
            buckets,
            vec![
                Bucket {
                    start_ns: 0,
                    count: 3,
                    min: Some(1.0),
                    max: Some(3.0),
                    avg: Some(5.0 / 3.0),
                    last: Value::Bool(true),
                },
                Bucket {
                    start_ns: 20 * S,
                    count: 2,
                    min: Some(-4.0),
                    max: Some(-4.0),
                    avg: Some(-4.0),
                    last: Value::Float(-4.0),
                },
                Bucket {
                    start_ns: 40 * S,
                    count: 1,
                    min: None,
                    max: None,
                    avg: None,
                    last: Value::Bytes(vec![1]),
                },
            ]
        );
    }
}
