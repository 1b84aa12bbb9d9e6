//! Sets of sequence numbers kept as closed intervals, the form of the dedup
//! marks: a gateway's seqs arrive in long consecutive runs, so a batch of a
//! thousand envelopes usually adds or extends one interval instead of
//! writing a thousand keys.
//!
//! ```text
//! stored set := [first, last], [first, last], ...   disjoint and non-adjacent
//!               (there is at least one missing seq between two intervals)
//! ```

/// The maximal runs of consecutive values in a sorted, duplicate-free slice.
pub fn runs(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &seq in sorted {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(seq) => *last = seq,
            _ => out.push((seq, seq)),
        }
    }
    out
}

/// Unions intervals, joining the ones that overlap or touch.
pub fn merge(mut pieces: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    pieces.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(pieces.len());
    for (first, last) in pieces {
        match out.last_mut() {
            Some((_, prev_last)) if prev_last.saturating_add(1) >= first => {
                *prev_last = (*prev_last).max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_gaps() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[1, 2, 3, 5, 7, 8]), vec![(1, 3), (5, 5), (7, 8)]);
        assert_eq!(
            runs(&[u64::MAX - 1, u64::MAX]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
    }

    #[test]
    fn merge_joins_touching_and_overlapping() {
        assert_eq!(merge(vec![(5, 6), (1, 3), (4, 4)]), vec![(1, 6)]);
        assert_eq!(merge(vec![(1, 10), (2, 3)]), vec![(1, 10)]);
        assert_eq!(merge(vec![(1, 2), (4, 5)]), vec![(1, 2), (4, 5)]);
        assert_eq!(merge(vec![(0, u64::MAX), (3, 4)]), vec![(0, u64::MAX)]);
    }
}
