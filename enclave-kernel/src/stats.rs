//! Statistics of the doorbell benchmark.

/// Summary of round-trip samples, in TSC cycles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub iterations: u64,
    /// Median (the upper one for an even count).
    pub median: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Smallest sample.
    pub min: u64,
}

/// Sorts `samples` and summarises them (all zero for no samples).
pub fn summarize(samples: &mut [u64]) -> Summary {
    let n = samples.len();
    if n == 0 {
        return Summary::default();
    }
    samples.sort_unstable();
    // Nearest rank: the smallest sample with at least 99% of the samples at or below it.
    let rank = (n * 99).div_ceil(100).max(1);
    Summary {
        iterations: n as u64,
        median: samples[n / 2],
        p99: samples[rank - 1],
        min: samples[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn summary_of_known_samples() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(
            summarize(&mut s),
            Summary {
                iterations: 100,
                median: 51,
                p99: 99,
                min: 1
            }
        );
        let mut one = [7];
        assert_eq!(
            summarize(&mut one),
            Summary {
                iterations: 1,
                median: 7,
                p99: 7,
                min: 7
            }
        );
        assert_eq!(summarize(&mut []), Summary::default());
        let mut s: Vec<u64> = (1..=1000).collect();
        assert_eq!(summarize(&mut s).p99, 990);
    }
}
