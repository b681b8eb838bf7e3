//! Consistency levels and the arithmetic of replicated writes and reads.
//!
//! Every count is taken against the shard's replication factor `rf`, not
//! against how many replicas happen to be reachable or readable, so a read
//! at `majority` always meets every write acknowledged at `majority`
//! (2 + 2 > 3): the write quorum is drawn from the writable replicas and the
//! read quorum from the readable ones, and readable ⊆ writable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// More than half of `rf`: 1 of 1, 2 of 2, 2 of 3, 3 of 4, 3 of 5.
fn majority(rf: usize) -> usize {
    rf / 2 + 1
}

/// How many replicas must acknowledge a write before the gateway
/// acknowledges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteLevel {
    /// Any one replica.
    One,
    /// More than half of the replicas (2 of 3): the default, as M3's.
    #[default]
    Majority,
    /// Every replica.
    All,
}

impl WriteLevel {
    pub const NAMES: &'static str = "one, majority, all";

    /// Acknowledgements needed out of `rf` replicas.
    pub fn required_acks(self, rf: usize) -> usize {
        match self {
            WriteLevel::One => rf.min(1),
            WriteLevel::Majority => majority(rf).min(rf),
            WriteLevel::All => rf,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WriteLevel::One => "one",
            WriteLevel::Majority => "majority",
            WriteLevel::All => "all",
        }
    }
}

/// How many replicas of each shard must answer a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadLevel {
    /// Any one replica.
    One,
    /// Succeeds while one replica answers; warns when fewer than a majority
    /// did (the default, as M3's).
    #[default]
    UnstrictMajority,
    /// More than half of the replicas.
    Majority,
    /// Every replica.
    All,
}

impl ReadLevel {
    pub const NAMES: &'static str = "one, unstrict_majority, majority, all";

    /// Answers needed out of `rf` replicas for the read to succeed at all.
    pub fn required_acks(self, rf: usize) -> usize {
        match self {
            ReadLevel::One | ReadLevel::UnstrictMajority => rf.min(1),
            ReadLevel::Majority => majority(rf).min(rf),
            ReadLevel::All => rf,
        }
    }

    /// Answers needed for the read to succeed without a warning: the
    /// majority for `unstrict_majority`, [`Self::required_acks`] otherwise.
    pub fn wanted_acks(self, rf: usize) -> usize {
        match self {
            ReadLevel::UnstrictMajority => majority(rf).min(rf),
            other => other.required_acks(rf),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReadLevel::One => "one",
            ReadLevel::UnstrictMajority => "unstrict_majority",
            ReadLevel::Majority => "majority",
            ReadLevel::All => "all",
        }
    }
}

impl fmt::Display for WriteLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ReadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} consistency level {value:?} (expected one of: {expected})")]
pub struct UnknownLevel {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Parses the names used in config and request headers (`majority`;
/// case-insensitive, `-` accepted for `_`).
impl FromStr for WriteLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, UnknownLevel> {
        match normalise(s).as_str() {
            "one" => Ok(WriteLevel::One),
            "majority" => Ok(WriteLevel::Majority),
            "all" => Ok(WriteLevel::All),
            _ => Err(UnknownLevel {
                what: "write",
                value: s.to_string(),
                expected: Self::NAMES,
            }),
        }
    }
}

impl FromStr for ReadLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, UnknownLevel> {
        match normalise(s).as_str() {
            "one" => Ok(ReadLevel::One),
            "unstrict_majority" => Ok(ReadLevel::UnstrictMajority),
            "majority" => Ok(ReadLevel::Majority),
            "all" => Ok(ReadLevel::All),
            _ => Err(UnknownLevel {
                what: "read",
                value: s.to_string(),
                expected: Self::NAMES,
            }),
        }
    }
}

fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

/// A write or a read level, as an outcome names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Write(WriteLevel),
    Read(ReadLevel),
}

impl Level {
    /// Successes without which the operation fails.
    pub fn required_acks(self, rf: usize) -> usize {
        match self {
            Level::Write(l) => l.required_acks(rf),
            Level::Read(l) => l.required_acks(rf),
        }
    }

    /// Successes without which the operation warns (equal to
    /// [`Self::required_acks`] except for `unstrict_majority` reads).
    pub fn wanted_acks(self, rf: usize) -> usize {
        match self {
            Level::Write(l) => l.required_acks(rf),
            Level::Read(l) => l.wanted_acks(rf),
        }
    }
}

impl From<WriteLevel> for Level {
    fn from(l: WriteLevel) -> Self {
        Level::Write(l)
    }
}

impl From<ReadLevel> for Level {
    fn from(l: ReadLevel) -> Self {
        Level::Read(l)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Write(l) => write!(f, "write consistency {l}"),
            Level::Read(l) => write!(f, "read consistency {l}"),
        }
    }
}

/// A shard whose replicas did not give the successes a level asks for:
/// the body of a 503 (when the level failed) or of a warning
/// (`unstrict_majority` with fewer than a majority).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LevelNotMet {
    pub shard: u32,
    pub level: Level,
    pub replication_factor: usize,
    /// Successes the level needed (for a warning: the majority it wanted).
    pub required: usize,
    pub succeeded: usize,
    /// Replicas that failed or timed out, in the order reported.
    pub failed: Vec<NodeId>,
}

impl fmt::Display for LevelNotMet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.level {
            Level::Write(_) => "acknowledged",
            Level::Read(_) => "answered",
        };
        write!(
            f,
            "shard {}: {} needs {} of {} replicas, {} {verb}",
            self.shard, self.level, self.required, self.replication_factor, self.succeeded
        )?;
        if !self.failed.is_empty() {
            f.write_str("; failed: ")?;
            for (i, node) in self.failed.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{node}")?;
            }
        }
        Ok(())
    }
}

/// What a shard's replica results add up to at a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Succeeded, but with fewer answers than a majority
    /// (`unstrict_majority` only): the response carries this as a warning.
    Warning(LevelNotMet),
    /// The level was not met: nothing may be reported as success.
    Failure(LevelNotMet),
}

impl Outcome {
    /// Success, with or without a warning.
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failure(_))
    }
}

/// The outcome for `shard` at `level` with replication factor `rf`, given
/// how many replicas succeeded and which failed. Replicas that were not
/// asked or have not answered count as neither.
pub fn evaluate(
    shard: u32,
    level: impl Into<Level>,
    rf: usize,
    succeeded: usize,
    failed: &[NodeId],
) -> Outcome {
    let level = level.into();
    let required = level.required_acks(rf);
    let wanted = level.wanted_acks(rf);
    let report = |required| LevelNotMet {
        shard,
        level,
        replication_factor: rf,
        required,
        succeeded,
        failed: failed.to_vec(),
    };
    if succeeded >= wanted {
        Outcome::Success
    } else if succeeded >= required {
        Outcome::Warning(report(wanted))
    } else {
        Outcome::Failure(report(required))
    }
}

/// Replica answers for one shard as they arrive, deciding as early as the
/// level allows: a write at `majority` is acknowledged on the second
/// success, and fails as soon as too few replicas are left to reach it.
#[derive(Debug, Clone)]
pub struct Tally {
    shard: u32,
    level: Level,
    rf: usize,
    asked: usize,
    succeeded: usize,
    failed: Vec<NodeId>,
}

impl Tally {
    /// A tally for `shard` at `level`, replication factor `rf`, having sent
    /// the request to `asked` replicas.
    pub fn new(shard: u32, level: impl Into<Level>, rf: usize, asked: usize) -> Self {
        Tally {
            shard,
            level: level.into(),
            rf,
            asked,
            succeeded: 0,
            failed: Vec::new(),
        }
    }

    pub fn success(&mut self) {
        self.succeeded += 1;
    }

    /// A replica failed, or timed out.
    pub fn failure(&mut self, node: NodeId) {
        self.failed.push(node);
    }

    /// Replicas asked that have not answered yet.
    pub fn pending(&self) -> usize {
        self.asked
            .saturating_sub(self.succeeded + self.failed.len())
    }

    /// The outcome once no further answer can change it, else `None`.
    pub fn decided(&self) -> Option<Outcome> {
        let required = self.level.required_acks(self.rf);
        let wanted = self.level.wanted_acks(self.rf);
        let pending = self.pending();
        if self.succeeded >= wanted || pending == 0 || self.succeeded + pending < required {
            Some(self.outcome())
        } else {
            None
        }
    }

    /// The outcome with the answers so far; replicas still pending count as
    /// not succeeded (record timeouts with [`Self::failure`] to name them).
    pub fn finish(self) -> Outcome {
        self.outcome()
    }

    fn outcome(&self) -> Outcome {
        evaluate(
            self.shard,
            self.level,
            self.rf,
            self.succeeded,
            &self.failed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::from(*n)).collect()
    }

    #[test]
    fn write_levels_count_acknowledgements() {
        assert_eq!(WriteLevel::One.required_acks(3), 1);
        assert_eq!(WriteLevel::Majority.required_acks(3), 2);
        assert_eq!(WriteLevel::Majority.required_acks(1), 1);
        assert_eq!(WriteLevel::Majority.required_acks(2), 2);
        assert_eq!(WriteLevel::Majority.required_acks(4), 3);
        assert_eq!(WriteLevel::Majority.required_acks(5), 3);
        assert_eq!(WriteLevel::All.required_acks(3), 3);
        assert_eq!(WriteLevel::One.required_acks(0), 0);
        assert_eq!(WriteLevel::Majority.required_acks(0), 0);
    }

    #[test]
    fn read_levels_count_answers() {
        for rf in 1..=5 {
            assert_eq!(ReadLevel::One.required_acks(rf), 1);
            assert_eq!(ReadLevel::UnstrictMajority.required_acks(rf), 1);
            assert_eq!(ReadLevel::UnstrictMajority.wanted_acks(rf), rf / 2 + 1);
            assert_eq!(ReadLevel::Majority.required_acks(rf), rf / 2 + 1);
            assert_eq!(ReadLevel::All.required_acks(rf), rf);
        }
    }

    #[test]
    fn majority_reads_meet_majority_writes() {
        for rf in 1..=7 {
            let w = WriteLevel::Majority.required_acks(rf);
            let r = ReadLevel::Majority.required_acks(rf);
            assert!(w + r > rf, "rf {rf}: {w} + {r}");
            assert!(WriteLevel::All.required_acks(rf) + ReadLevel::One.required_acks(rf) > rf);
        }
    }

    #[test]
    fn levels_parse_from_config_names() {
        assert_eq!(
            "majority".parse::<WriteLevel>().unwrap(),
            WriteLevel::Majority
        );
        assert_eq!(" ALL ".parse::<WriteLevel>().unwrap(), WriteLevel::All);
        assert_eq!(
            "unstrict-majority".parse::<ReadLevel>().unwrap(),
            ReadLevel::UnstrictMajority
        );
        for l in [WriteLevel::One, WriteLevel::Majority, WriteLevel::All] {
            assert_eq!(l.as_str().parse::<WriteLevel>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.as_str()));
        }
        for l in [
            ReadLevel::One,
            ReadLevel::UnstrictMajority,
            ReadLevel::Majority,
            ReadLevel::All,
        ] {
            assert_eq!(l.as_str().parse::<ReadLevel>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(serde_json::from_str::<ReadLevel>(&json).unwrap(), l);
        }
        let err = "unstrict_majority".parse::<WriteLevel>().unwrap_err();
        assert!(err.to_string().contains("one, majority, all"), "{err}");
        assert!(!crate::Error::from(err).is_retryable());
        assert_eq!(WriteLevel::default(), WriteLevel::Majority);
        assert_eq!(ReadLevel::default(), ReadLevel::UnstrictMajority);
    }

    #[test]
    fn outcomes_name_the_shard_level_and_failed_replicas() {
        assert_eq!(
            evaluate(4, WriteLevel::Majority, 3, 2, &ids(&["c"])),
            Outcome::Success
        );
        let out = evaluate(4, WriteLevel::Majority, 3, 1, &ids(&["b", "c"]));
        let Outcome::Failure(e) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(
            e.to_string(),
            "shard 4: write consistency majority needs 2 of 3 replicas, 1 acknowledged; \
             failed: b, c"
        );
        let err = crate::Error::from(e.clone());
        assert!(err.is_retryable());

        assert!(!evaluate(4, WriteLevel::All, 3, 2, &ids(&["c"])).is_success());
        assert_eq!(
            evaluate(4, WriteLevel::One, 3, 1, &ids(&["a", "b"])),
            Outcome::Success
        );
    }

    #[test]
    fn unstrict_majority_warns_below_a_majority_and_fails_at_zero() {
        let lvl = ReadLevel::UnstrictMajority;
        assert_eq!(evaluate(1, lvl, 3, 2, &ids(&["c"])), Outcome::Success);
        let out = evaluate(1, lvl, 3, 1, &ids(&["b", "c"]));
        let Outcome::Warning(w) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(w.required, 2);
        assert_eq!(
            w.to_string(),
            "shard 1: read consistency unstrict_majority needs 2 of 3 replicas, 1 answered; \
             failed: b, c"
        );
        assert!(out.is_success());
        assert!(matches!(out, Outcome::Warning(_)));
        let out = evaluate(1, lvl, 3, 0, &ids(&["a", "b", "c"]));
        assert!(
            matches!(&out, Outcome::Failure(e) if e.required == 1),
            "{out:?}"
        );
        // Majority reads with two of three down fail, with a clear message.
        let out = evaluate(1, ReadLevel::Majority, 3, 1, &ids(&["b", "c"]));
        assert!(!out.is_success());
    }

    #[test]
    fn outcome_classification_matches_the_counts() {
        let levels: Vec<Level> = vec![
            WriteLevel::One.into(),
            WriteLevel::Majority.into(),
            WriteLevel::All.into(),
            ReadLevel::One.into(),
            ReadLevel::UnstrictMajority.into(),
            ReadLevel::Majority.into(),
            ReadLevel::All.into(),
        ];
        for level in levels {
            for rf in 1..=5 {
                for ok in 0..=rf {
                    let out = evaluate(0, level, rf, ok, &[]);
                    let (req, want) = (level.required_acks(rf), level.wanted_acks(rf));
                    assert!(req >= 1 && req <= want && want <= rf);
                    match out {
                        Outcome::Success => assert!(ok >= want),
                        Outcome::Warning(_) => {
                            assert!(ok >= req && ok < want);
                            assert_eq!(level, Level::Read(ReadLevel::UnstrictMajority));
                        }
                        Outcome::Failure(_) => assert!(ok < req),
                    }
                }
            }
        }
    }

    #[test]
    fn tally_decides_as_early_as_the_level_allows() {
        let mut t = Tally::new(9, WriteLevel::Majority, 3, 3);
        assert_eq!(t.decided(), None);
        t.success();
        assert_eq!(t.decided(), None);
        t.success();
        assert_eq!(t.decided(), Some(Outcome::Success));

        let mut t = Tally::new(9, WriteLevel::Majority, 3, 3);
        t.failure("a".into());
        assert_eq!(t.decided(), None);
        t.failure("b".into());
        let Some(Outcome::Failure(e)) = t.decided() else {
            panic!("two of three failed at majority")
        };
        assert_eq!(e.failed, ids(&["a", "b"]));

        // Asked fewer replicas than the level needs: decided at once.
        let t = Tally::new(2, WriteLevel::All, 3, 2);
        assert!(matches!(t.decided(), Some(Outcome::Failure(_))));

        // unstrict_majority waits for a majority or for every answer.
        let mut t = Tally::new(2, ReadLevel::UnstrictMajority, 3, 3);
        t.success();
        assert_eq!(t.decided(), None);
        t.failure("b".into());
        assert_eq!(t.decided(), None);
        t.failure("c".into());
        assert!(matches!(t.decided(), Some(Outcome::Warning(_))));

        let mut t = Tally::new(2, ReadLevel::All, 3, 3);
        t.success();
        t.success();
        assert_eq!(t.pending(), 1);
        assert!(matches!(t.finish(), Outcome::Failure(e) if e.succeeded == 2));
    }
}
