//! The answer of a cardinality read ([`SeriesReader::cardinality`]):
//! how many series a tenant has and how they spread over label pairs, in
//! full (no top-N cut), so answers over disjoint sets of series (shards,
//! nodes) add up with [`Cardinality::merge`]. Ranking and cutting to a
//! limit belong to the caller (the HTTP layer's status and cardinality
//! endpoints).
//!
//! [`SeriesReader::cardinality`]: crate::SeriesReader::cardinality

use cairn_common::{Labels, METRIC_NAME};
use std::collections::BTreeMap;

/// Series counts of one tenant's series that matched a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cardinality {
    /// Series counted.
    pub series: u64,
    /// Series per label name, then per value of that name: every label
    /// pair of the counted series appears, with how many series hold it.
    pub pairs: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Cardinality {
    /// The counts of `series` (distinct label sets).
    pub fn of_series<'a>(series: impl IntoIterator<Item = &'a Labels>) -> Self {
        let mut c = Cardinality::default();
        for l in series {
            c.add(l);
        }
        c
    }

    /// Counts one more series.
    pub fn add(&mut self, labels: &Labels) {
        self.series += 1;
        for l in labels.iter() {
            *self
                .pairs
                .entry(l.name.clone())
                .or_default()
                .entry(l.value.clone())
                .or_default() += 1;
        }
    }

    /// Adds the counts of `other`, which counted *other* series (another
    /// shard, another node's shards): counts of one series twice would be
    /// counted twice.
    pub fn merge(&mut self, other: Cardinality) {
        self.series += other.series;
        for (name, values) in other.pairs {
            let mine = self.pairs.entry(name).or_default();
            for (value, n) in values {
                *mine.entry(value).or_default() += n;
            }
        }
    }

    /// Label pairs over every counted series (a series with 4 labels adds 4).
    pub fn label_value_pairs(&self) -> u64 {
        self.pairs.values().flat_map(|v| v.values()).sum()
    }

    /// Series holding label `name` (each holds a name at most once).
    pub fn series_with_label(&self, name: &str) -> u64 {
        self.pairs.get(name).map_or(0, |v| v.values().sum())
    }

    /// Series per metric name.
    pub fn by_metric_name(&self) -> Option<&BTreeMap<String, u64>> {
        self.pairs.get(METRIC_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let a = Labels::from_pairs(&[("__name__", "up"), ("job", "api")]);
        let b = Labels::from_pairs(&[("__name__", "up"), ("job", "db"), ("zone", "z")]);
        let c = Labels::from_pairs(&[("__name__", "down"), ("job", "api")]);
        let all = Cardinality::of_series([&a, &b, &c]);
        assert_eq!(all.series, 3);
        assert_eq!(all.label_value_pairs(), 7);
        assert_eq!(all.series_with_label("job"), 3);
        assert_eq!(all.series_with_label("zone"), 1);
        assert_eq!(all.series_with_label("nope"), 0);
        assert_eq!(all.by_metric_name().unwrap()["up"], 2);
        let mut merged = Cardinality::of_series([&a]);
        merged.merge(Cardinality::of_series([&b, &c]));
        assert_eq!(merged, all);
    }
}
