//! A tenant's mapping rules: which storage policies (the aggregated
//! namespaces of `storage.namespaces`, e.g. `5m:1y`) the series a selector
//! matches are downsampled into, from a cutover time on — M3's mapping
//! rules. Raw is always kept (it is what the windows are computed from,
//! within raw retention); a series no rule matches is downsampled into
//! every aggregated namespace (the default), and one that rules match into
//! the union of their policies (`[]`: raw only). A rule decides the windows
//! starting at or after its cutover (event time, so every replica and
//! every replay decides a window alike whenever it learned the rule);
//! windows already written stay as they are. A dry-run rule decides
//! nothing: the storage node counts the windows it would have changed.

use cairn_common::Matcher;
use cairn_downsample::StoragePolicy;
pub use cairn_downsample::{keeps, MatchedMapping};
use serde::{Deserialize, Serialize};

/// Most mapping rules a tenant may have, and policies one rule lists.
pub(crate) const MAX_MAPPING_RULES: usize = 256;
pub(crate) const MAX_POLICIES: usize = 16;

/// One mapping rule as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Unique within the tenant.
    pub name: String,
    /// A series selector, e.g. `{__name__=~"node_.*"}`.
    pub selector: String,
    /// The storage policies (`5m:1y`) the matched series are downsampled
    /// into besides raw; empty: raw only.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Windows starting at or after this time (ms since the epoch) follow
    /// the rule. The admin API sets it to the time of the change when it
    /// is left out.
    #[serde(default)]
    pub cutover_ms: Option<i64>,
    /// Count the windows the rule would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Rules with their selectors parsed and policies resolved.
#[derive(Debug, Clone, Default)]
pub struct CompiledMapping {
    rules: Vec<(MatchedMapping, Vec<Matcher>)>,
}

/// Checks a tenant's mapping rules: names unique and non-empty, selectors
/// valid, policies parsed, at most [`MAX_MAPPING_RULES`]; the error names
/// the rule. (Whether a policy is one this cluster keeps is the admin
/// API's check: the metadata store does not know the storage config.)
pub fn check_mapping_rules(rules: &[MappingRule]) -> Result<(), String> {
    crate::rules::check_count("mapping rules", rules.len(), MAX_MAPPING_RULES)?;
    CompiledMapping::compile(rules).map(|_| ())
}

impl CompiledMapping {
    pub fn compile(rules: &[MappingRule]) -> Result<Self, String> {
        let selectors = crate::rules::compile_selectors(
            "mapping rule",
            rules.iter().map(|r| (r.name.as_str(), r.selector.as_str())),
        )?;
        let mut out = Vec::with_capacity(rules.len());
        for (r, ms) in rules.iter().zip(selectors) {
            if r.policies.len() > MAX_POLICIES {
                return Err(format!(
                    "mapping rule {:?}: {} policies, at most {MAX_POLICIES}",
                    r.name,
                    r.policies.len()
                ));
            }
            let mut namespaces = Vec::with_capacity(r.policies.len());
            for p in &r.policies {
                let policy: StoragePolicy = p
                    .parse()
                    .map_err(|e| format!("mapping rule {:?}: policy {p:?}: {e}", r.name))?;
                if policy.resolution().is_raw() {
                    return Err(format!(
                        "mapping rule {:?}: policy {p:?}: raw is always kept; list the aggregated policies (e.g. 5m:1y)",
                        r.name
                    ));
                }
                namespaces.push(policy.namespace_name());
            }
            out.push((
                MatchedMapping {
                    rule: r.name.clone(),
                    namespaces,
                    cutover_ms: r.cutover_ms.unwrap_or(i64::MIN),
                    dry_run: r.dry_run,
                },
                ms,
            ));
        }
        Ok(CompiledMapping { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that match a series given its (name, value) label pairs,
    /// in the order they were written.
    pub fn matching<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Vec<MatchedMapping> {
        self.rules
            .iter()
            .filter(|(_, ms)| crate::rules::matches(ms, pairs.clone()))
            .map(|(m, _)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        name: &str,
        sel: &str,
        policies: &[&str],
        cutover: Option<i64>,
        dry: bool,
    ) -> MappingRule {
        MappingRule {
            name: name.into(),
            selector: sel.into(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            cutover_ms: cutover,
            dry_run: dry,
        }
    }

    #[test]
    fn rules_union_their_policies_from_their_cutover() {
        let m = CompiledMapping::compile(&[
            rule(
                "node",
                r#"{__name__=~"node_.*"}"#,
                &["1h:5y"],
                Some(1000),
                false,
            ),
            rule("prod", r#"{env="prod"}"#, &["5m:1y"], Some(2000), false),
            rule("dev", r#"{env="dev"}"#, &[], None, false),
            rule("try", r#"{env="prod"}"#, &[], None, true),
        ])
        .unwrap();
        let pairs = [("__name__", "node_load1"), ("env", "prod")];
        let hit = m.matching(pairs.iter().copied());
        let names: Vec<&str> = hit.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(names, ["node", "prod", "try"]);
        // Before any cutover: the default, every namespace.
        assert!(keeps(&hit, "agg_5m_1y", 999, false));
        assert!(keeps(&hit, "agg_1m_30d", 999, false));
        // From 1000 only `node` is in force: 1h only.
        assert!(!keeps(&hit, "agg_5m_1y", 1000, false));
        assert!(keeps(&hit, "agg_1h_5y", 1000, false));
        // From 2000 the union: 1h and 5m, not 1m.
        assert!(keeps(&hit, "agg_5m_1y", 2000, false));
        assert!(keeps(&hit, "agg_1h_5y", 2000, false));
        assert!(!keeps(&hit, "agg_1m_30d", 2000, false));
        // The dry run (raw only, always in force) adds no namespace; on its
        // own it would have kept the series out of everything.
        let dry_only = m.matching([("env", "prod")].iter().copied());
        assert!(keeps(&dry_only, "agg_5m_1y", 1500, false));
        assert!(!keeps(&dry_only, "agg_5m_1y", 1500, true));
        // `[]` keeps raw only.
        let dev = m.matching([("env", "dev")].iter().copied());
        assert!(!keeps(&dev, "agg_5m_1y", 0, false));
        // No rule: every namespace.
        assert!(keeps(
            &m.matching([("env", "qa")].iter().copied()),
            "agg_5m_1y",
            0,
            false
        ));
    }

    #[test]
    fn bad_rules_are_named() {
        let cases = [
            (
                vec![rule("", "{a=\"b\"}", &[], None, false)],
                "mapping rule #1: a name",
            ),
            (
                vec![
                    rule("x", "{a=\"b\"}", &[], None, false),
                    rule("x", "{c=\"d\"}", &[], None, false),
                ],
                "\"x\": the name is used twice",
            ),
            (
                vec![rule("x", "{a=", &[], None, false)],
                "mapping rule \"x\": selector",
            ),
            (
                vec![rule("x", "{a=\"b\"}", &["5m"], None, false)],
                "mapping rule \"x\": policy \"5m\"",
            ),
            (
                vec![rule("x", "{a=\"b\"}", &["raw:30d"], None, false)],
                "raw is always kept",
            ),
            (
                vec![rule("x", "{a=\"b\"}", &["5m:1y"; 17], None, false)],
                "17 policies, at most 16",
            ),
        ];
        for (rules, want) in cases {
            let e = check_mapping_rules(&rules).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let many: Vec<MappingRule> = (0..=MAX_MAPPING_RULES)
            .map(|i| rule(&format!("r{i}"), "{a=\"b\"}", &[], None, false))
            .collect();
        assert!(check_mapping_rules(&many)
            .unwrap_err()
            .contains("at most 256"));
    }
}
