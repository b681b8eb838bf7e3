//! A tenant's drop rules: ordered series selectors, each either dropping
//! what it matches unconditionally (`drop`) or marking it sheddable at a
//! priority (`shed`: when the tenant is over its rate, the lowest priority
//! goes first, before anything else is refused). Any rule may be a dry run:
//! it counts what it would drop and drops nothing (a dry-run shed rule is
//! charged to the rate as a real one, so it counts exactly what the rule
//! would shed; what it would shed is stored anyway).

use cairn_common::{parse_selector, Matcher};
use serde::{Deserialize, Serialize};

/// Most drop rules a tenant may have.
pub(crate) const MAX_RULES: usize = 256;
/// Longest selector of a rule, bytes.
pub(crate) const MAX_SELECTOR: usize = 4096;

/// What a rule does with the series it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Shed when over the rate, lowest priority first.
    #[default]
    Shed,
    /// Always drop.
    Drop,
}

/// One rule as an operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropRule {
    /// Unique within the tenant; the `rule` label of the counters.
    pub name: String,
    /// A series selector, e.g. `{__name__=~"go_.*"}` or `{env="dev"}`.
    pub selector: String,
    #[serde(default)]
    pub action: RuleAction,
    /// Shed order: lower goes first (shed rules only).
    #[serde(default)]
    pub priority: i32,
    /// Count what the rule would drop, drop nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What the rules say of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No rule takes it: refused only when the request as a whole is over.
    Keep,
    /// Rule `rule` drops it (counted only, when a dry run).
    Drop { rule: usize, dry_run: bool },
    /// Rule `rule` lets it be shed at `priority`.
    Shed {
        rule: usize,
        priority: i32,
        dry_run: bool,
    },
}

/// Rules with their selectors parsed.
#[derive(Debug, Clone, Default)]
pub struct CompiledRules {
    rules: Vec<(DropRule, Vec<Matcher>)>,
}

/// Checks a tenant's rules: names unique and non-empty, selectors valid;
/// the error names the rule.
pub fn check_rules(rules: &[DropRule]) -> Result<(), String> {
    // Each rule is matched against every series a tenant writes, and the
    // list travels in one metadata entry: both are kept small.
    check_count("drop rules", rules.len(), MAX_RULES)?;
    CompiledRules::compile(rules).map(|_| ())
}

/// Refuses a list of more than `max` rules (`what`: "drop rules").
pub(crate) fn check_count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{n} {what}: at most {max} per tenant"));
    }
    Ok(())
}

/// What every kind of rule list checks of its rules, given as (name,
/// selector): names of 1 to 128 bytes, each once; selectors of at most
/// [`MAX_SELECTOR`] bytes that parse. Returns each rule's matchers; errors
/// name the rule (`kind`: "drop rule").
pub(crate) fn compile_selectors<'a>(
    kind: &str,
    rules: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Vec<Matcher>>, String> {
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (name, selector) in rules {
        if name.is_empty() || name.len() > 128 {
            return Err(format!(
                "{kind} #{}: a name of 1 to 128 bytes is required",
                names.len() + 1
            ));
        }
        if names.contains(&name) {
            return Err(format!("{kind} {name:?}: the name is used twice"));
        }
        names.push(name);
        if selector.len() > MAX_SELECTOR {
            return Err(format!(
                "{kind} {name:?}: the selector is {} bytes, above {MAX_SELECTOR}",
                selector.len()
            ));
        }
        let ms = parse_selector(selector)
            .map_err(|e| format!("{kind} {name:?}: selector {selector:?}: {e}"))?;
        out.push(ms);
    }
    Ok(out)
}

impl CompiledRules {
    pub fn compile(rules: &[DropRule]) -> Result<Self, String> {
        let ms = compile_selectors(
            "drop rule",
            rules.iter().map(|r| (r.name.as_str(), r.selector.as_str())),
        )?;
        Ok(CompiledRules {
            rules: rules.iter().cloned().zip(ms).collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, i: usize) -> &DropRule {
        &self.rules[i].0
    }

    /// The class of a series given its (name, value) label pairs: the first
    /// `drop` rule that matches (a real one before dry runs), else the
    /// lowest-priority `shed` rule that matches (real before dry run).
    pub fn classify<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Class {
        let mut drop_dry = None;
        let mut shed: Option<Class> = None;
        for (i, (r, ms)) in self.rules.iter().enumerate() {
            if !matches(ms, pairs.clone()) {
                continue;
            }
            match r.action {
                RuleAction::Drop if !r.dry_run => {
                    return Class::Drop {
                        rule: i,
                        dry_run: false,
                    }
                }
                RuleAction::Drop => {
                    drop_dry.get_or_insert(Class::Drop {
                        rule: i,
                        dry_run: true,
                    });
                }
                RuleAction::Shed => {
                    let better = match shed {
                        None => true,
                        Some(Class::Shed {
                            priority, dry_run, ..
                        }) => (r.dry_run, r.priority) < (dry_run, priority),
                        Some(_) => false,
                    };
                    if better {
                        shed = Some(Class::Shed {
                            rule: i,
                            priority: r.priority,
                            dry_run: r.dry_run,
                        });
                    }
                }
            }
        }
        // A dry-run drop is only counted: the series may still be shed.
        match (shed, drop_dry) {
            (Some(s @ Class::Shed { dry_run: false, .. }), _) => s,
            (_, Some(d)) => d,
            (Some(s), None) => s,
            (None, None) => Class::Keep,
        }
    }
}

pub(crate) fn matches<'a>(
    ms: &[Matcher],
    pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> bool {
    ms.iter().all(|m| {
        let v = pairs
            .clone()
            .find(|(n, _)| *n == m.name)
            .map_or("", |(_, v)| v);
        m.matches(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, sel: &str, action: RuleAction, priority: i32, dry_run: bool) -> DropRule {
        DropRule {
            name: name.into(),
            selector: sel.into(),
            action,
            priority,
            dry_run,
        }
    }

    #[test]
    fn classify_picks_drop_then_lowest_shed() {
        let r = CompiledRules::compile(&[
            rule("go", r#"{__name__=~"go_.*"}"#, RuleAction::Shed, 1, false),
            rule("dev", r#"{env="dev"}"#, RuleAction::Shed, 0, false),
            rule(
                "debug",
                r#"{__name__="debug_x"}"#,
                RuleAction::Drop,
                0,
                false,
            ),
            rule("try", r#"{env="dev", job="j"}"#, RuleAction::Drop, 0, true),
        ])
        .unwrap();
        let c = |p: &[(&'static str, &'static str)]| r.classify(p.iter().copied());
        assert_eq!(c(&[("__name__", "up")]), Class::Keep);
        assert_eq!(
            c(&[("__name__", "go_gc"), ("env", "dev")]),
            Class::Shed {
                rule: 1,
                priority: 0,
                dry_run: false
            }
        );
        assert_eq!(
            c(&[("__name__", "go_gc")]),
            Class::Shed {
                rule: 0,
                priority: 1,
                dry_run: false
            }
        );
        assert_eq!(
            c(&[("__name__", "debug_x")]),
            Class::Drop {
                rule: 2,
                dry_run: false
            }
        );
        assert_eq!(
            c(&[("__name__", "x"), ("env", "prod"), ("job", "j")]),
            Class::Keep
        );
        assert_eq!(c(&[("__name__", "x"), ("job", "j")]), Class::Keep);
    }

    #[test]
    fn bad_rules_are_named() {
        let e = check_rules(&[rule("a", "{x=", RuleAction::Drop, 0, false)]).unwrap_err();
        assert!(e.contains("\"a\""), "{e}");
        let e = check_rules(&[
            rule("a", "{x=\"1\"}", RuleAction::Drop, 0, false),
            rule("a", "{x=\"2\"}", RuleAction::Drop, 0, false),
        ])
        .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let many: Vec<DropRule> = (0..=MAX_RULES)
            .map(|i| rule(&format!("r{i}"), "{x=\"1\"}", RuleAction::Drop, 0, false))
            .collect();
        assert!(check_rules(&many).unwrap_err().contains("at most 256"));
        let long = format!("{{x=\"{}\"}}", "a".repeat(MAX_SELECTOR));
        let e = check_rules(&[rule("long", &long, RuleAction::Drop, 0, false)]).unwrap_err();
        assert!(e.contains("\"long\"") && e.contains("bytes"), "{e}");
        let e = check_rules(&[rule("all", "{x=~\".*\"}", RuleAction::Drop, 0, false)]).unwrap_err();
        assert!(
            e.contains("\"all\"") && e.contains("does not match the empty string"),
            "{e}"
        );
    }
}
