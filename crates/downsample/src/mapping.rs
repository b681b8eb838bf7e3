//! Mapping rules as the storage node applies them: the rules a series
//! matched (compiled from a tenant's records by `cairn-tenancy`) and
//! whether one of its windows goes to an aggregated namespace.

/// A rule that matched a series, as the storage node applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedMapping {
    pub rule: String,
    /// The aggregated namespaces it keeps the series in, as the storage
    /// names them (`agg_5m_1y`).
    pub namespaces: Vec<String>,
    pub cutover_ms: i64,
    pub dry_run: bool,
}

/// Whether the window starting at `window_start` of a series that `rules`
/// match goes to aggregated namespace `namespace`: the rules in force then
/// (cutover at or before it; dry runs only when `with_dry_runs`) keep it
/// where any of them lists it; with none in force, every namespace does.
pub fn keeps(
    rules: &[MatchedMapping],
    namespace: &str,
    window_start: i64,
    with_dry_runs: bool,
) -> bool {
    let mut in_force = rules
        .iter()
        .filter(|r| r.cutover_ms <= window_start && (with_dry_runs || !r.dry_run))
        .peekable();
    if in_force.peek().is_none() {
        return true;
    }
    in_force.any(|r| r.namespaces.iter().any(|n| n == namespace))
}
