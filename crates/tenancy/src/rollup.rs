//! A tenant's rollup rules: aggregate away labels into a new series — the
//! sum, by the labels the rule keeps, of the matched counters' reset-aware
//! increase per window (M3's `increase → sum`), stored as the `increase`
//! rollup of series `output` in every aggregated namespace. The gateway
//! copies each matched input, under the output's labels and an
//! [`INPUT_LABEL`] naming the input, into the internal `rollup_inputs`
//! namespace; that label is left out of the hash a series' shard comes
//! from, so every input of one output lands on the output's shard, whose
//! replicas sum them in their downsampling pass. `drop_inputs` keeps the
//! matched inputs out of raw (counted as dropped by the rule).

use cairn_common::Matcher;
use serde::{Deserialize, Serialize};

pub use cairn_common::INPUT_LABEL;

/// Most rollup rules a tenant may have.
pub(crate) const MAX_ROLLUP_RULES: usize = 64;

/// One rollup rule as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupRule {
    /// Unique within the tenant.
    pub name: String,
    /// The counters summed, e.g. `{__name__="http_requests_total"}`.
    pub selector: String,
    /// The labels kept (the others are aggregated away).
    #[serde(default)]
    pub by: Vec<String>,
    /// The output series' metric name, e.g. `service:http_requests:increase`.
    pub output: String,
    /// Keep the matched inputs out of raw.
    #[serde(default)]
    pub drop_inputs: bool,
}

/// Rules with their selectors parsed.
#[derive(Debug, Clone, Default)]
pub struct CompiledRollups {
    rules: Vec<(RollupRule, Vec<Matcher>)>,
}

/// Checks a tenant's rollup rules; the error names the rule.
pub fn check_rollup_rules(rules: &[RollupRule]) -> Result<(), String> {
    crate::rules::check_count("rollup rules", rules.len(), MAX_ROLLUP_RULES)?;
    CompiledRollups::compile(rules).map(|_| ())
}

impl CompiledRollups {
    pub fn compile(rules: &[RollupRule]) -> Result<Self, String> {
        let selectors = crate::rules::compile_selectors(
            "rollup rule",
            rules.iter().map(|r| (r.name.as_str(), r.selector.as_str())),
        )?;
        let mut out = Vec::with_capacity(rules.len());
        for (r, ms) in rules.iter().zip(selectors) {
            if !cairn_common::is_valid_metric_name(&r.output) {
                return Err(format!(
                    "rollup rule {:?}: output {:?} is not a metric name",
                    r.name, r.output
                ));
            }
            if let Some(b) =
                r.by.iter()
                    .find(|b| !cairn_common::is_valid_label_name(b) || b.starts_with("__"))
            {
                return Err(format!(
                    "rollup rule {:?}: by {b:?} is not a label name a rule may keep",
                    r.name
                ));
            }
            out.push((r.clone(), ms));
        }
        Ok(CompiledRollups { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> impl Iterator<Item = &RollupRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// The rules (by index) that match a series given its label pairs.
    pub fn matching<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, (_, ms))| crate::rules::matches(ms, pairs.clone()))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn rule(&self, i: usize) -> &RollupRule {
        &self.rules[i].0
    }

    /// The label pairs (sorted) of rule `i`'s copy of an input whose pairs
    /// are `pairs` and whose id is `input` (hex).
    pub fn output_pairs<'a>(
        &'a self,
        i: usize,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
        input: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        let r = &self.rules[i].0;
        let mut out: Vec<(&str, &str)> =
            vec![("__name__", r.output.as_str()), (INPUT_LABEL, input)];
        for (n, v) in pairs {
            if r.by.iter().any(|b| b == n) && !v.is_empty() {
                out.push((n, v));
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, sel: &str, by: &[&str], output: &str) -> RollupRule {
        RollupRule {
            name: name.into(),
            selector: sel.into(),
            by: by.iter().map(|b| b.to_string()).collect(),
            output: output.into(),
            drop_inputs: false,
        }
    }

    #[test]
    fn outputs_keep_the_by_labels_and_name_the_input() {
        let r = CompiledRollups::compile(&[rule(
            "svc",
            r#"{__name__="http_requests_total"}"#,
            &["service", "code"],
            "service:http_requests:increase",
        )])
        .unwrap();
        let pairs = [
            ("__name__", "http_requests_total"),
            ("code", "200"),
            ("instance", "a"),
            ("service", "api"),
        ];
        assert_eq!(r.matching(pairs.iter().copied()), [0]);
        assert_eq!(
            r.output_pairs(0, pairs.iter().copied(), "ab12"),
            [
                ("__input__", "ab12"),
                ("__name__", "service:http_requests:increase"),
                ("code", "200"),
                ("service", "api"),
            ]
        );
        assert!(r
            .matching([("__name__", "other")].iter().copied())
            .is_empty());
    }

    #[test]
    fn bad_rules_are_named() {
        for (rules, want) in [
            (
                vec![rule("", "{a=\"b\"}", &[], "x")],
                "rollup rule #1: a name",
            ),
            (
                vec![rule("r", "{a=\"b\"}", &[], "1x")],
                "output \"1x\" is not a metric name",
            ),
            (
                vec![rule("r", "{a=\"b\"}", &["__name__"], "x")],
                "by \"__name__\"",
            ),
            (
                vec![rule("r", "{a=", &[], "x")],
                "rollup rule \"r\": selector",
            ),
            (
                vec![
                    rule("r", "{a=\"b\"}", &[], "x"),
                    rule("r", "{a=\"c\"}", &[], "y"),
                ],
                "used twice",
            ),
        ] {
            let e = check_rollup_rules(&rules).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
