//! Authorisation: who may send to, receive from, create and manage which
//! addresses (issue "Security and robustness").
//!
//! Rules are Artemis' security settings in spirit: each `[[access]]` entry
//! names an address pattern (the same `*` / `#` wildcards as queue
//! settings) and, per permission, the users and groups that have it. For an
//! address, the most specific matching entry decides, alone (so a specific
//! entry can grant less than a broad one). With no entries at all every
//! principal may do everything, as before rules existed; once there are
//! entries, an address no entry matches is denied.
//!
//! Principals are written `alice` (a user), `@traders` (a group),
//! `anonymous` (a client without credentials) or `*` (anyone, anonymous
//! included). This module is protocol-neutral.

use serde::{Deserialize, Serialize};

use super::settings::{pattern_matches, pattern_problem};

/// What a client wants to do with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Publish to it (a producer link, a relay transfer, a transactional post).
    Send,
    /// Consume or browse from it, or subscribe to it.
    Receive,
    /// Create it (auto-creation on first use).
    Create,
    /// Manage it (the management API: purge, move, rebalance, ...).
    Manage,
}

impl Permission {
    /// Its name in the config and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Send => "send",
            Permission::Receive => "receive",
            Permission::Create => "create",
            Permission::Manage => "manage",
        }
    }
}

/// Who a connection is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The authenticated user, or None for an anonymous client.
    pub user: Option<String>,
    /// The user's groups (from the config).
    pub groups: Vec<String>,
}

impl Principal {
    /// An anonymous client.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Whether `name` (a user, `@group`, `anonymous` or `*`) designates
    /// this principal.
    fn is(&self, name: &str) -> bool {
        match name {
            "*" => true,
            "anonymous" => self.user.is_none(),
            group if group.starts_with('@') => self.groups.iter().any(|g| g == &group[1..]),
            user => self.user.as_deref() == Some(user),
        }
    }

    /// The principal as logs and errors name it.
    pub fn display(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }
}

/// One `[[access]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AccessRule {
    /// Address pattern the entry applies to.
    pub pattern: String,
    /// Principals that may publish.
    pub send: Vec<String>,
    /// Principals that may consume, browse and subscribe.
    pub receive: Vec<String>,
    /// Principals that may create the address.
    pub create: Vec<String>,
    /// Principals that may manage it.
    pub manage: Vec<String>,
}

impl AccessRule {
    /// The principals with `permission`.
    fn holders(&self, permission: Permission) -> &[String] {
        match permission {
            Permission::Send => &self.send,
            Permission::Receive => &self.receive,
            Permission::Create => &self.create,
            Permission::Manage => &self.manage,
        }
    }
}

/// Why access rules cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[access]] entry `{pattern}`: {problem}")]
pub struct AccessError {
    /// The entry's pattern.
    pub pattern: String,
    /// What is wrong.
    pub problem: String,
}

/// The broker's access rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Entries, most specific first.
    rules: Vec<AccessRule>,
}

/// How specific a pattern is: literal words count most, then `*`, and a
/// `#` least; longer patterns before shorter among equals.
fn specificity(pattern: &str) -> (usize, usize, usize) {
    let words: Vec<&str> = pattern.split('.').collect();
    let literal = words.iter().filter(|w| **w != "*" && **w != "#").count();
    let single = words.iter().filter(|w| **w == "*").count();
    (literal, single, words.len())
}

impl AccessRules {
    /// Checks and orders the entries. Refused: a bad pattern, two entries
    /// with one pattern, an unknown principal form (`@` alone).
    pub fn new(mut rules: Vec<AccessRule>) -> Result<Self, AccessError> {
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            let error = |problem: String| AccessError {
                pattern: r.pattern.clone(),
                problem,
            };
            if let Some(problem) = pattern_problem(&r.pattern) {
                return Err(error(problem));
            }
            if !seen.insert(r.pattern.clone()) {
                return Err(error("the same pattern appears twice".into()));
            }
            for p in r
                .send
                .iter()
                .chain(&r.receive)
                .chain(&r.create)
                .chain(&r.manage)
            {
                if p.is_empty() || p == "@" {
                    return Err(error(format!(
                        "`{p}` is not a user, @group, anonymous or *"
                    )));
                }
            }
        }
        rules.sort_by_key(|r| std::cmp::Reverse(specificity(&r.pattern)));
        Ok(Self { rules })
    }

    /// Whether there are rules at all (without, everything is allowed).
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether `principal` may do `permission` on `address`.
    pub fn allows(&self, principal: &Principal, permission: Permission, address: &str) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        self.rules
            .iter()
            .find(|r| pattern_matches(&r.pattern, address))
            .is_some_and(|r| r.holders(permission).iter().any(|p| principal.is(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, send: &[&str], receive: &[&str]) -> AccessRule {
        AccessRule {
            pattern: pattern.into(),
            send: send.iter().map(|s| s.to_string()).collect(),
            receive: receive.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal {
            user: Some(name.into()),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn without_rules_everything_is_allowed() {
        let rules = AccessRules::new(vec![]).unwrap();
        assert!(rules.allows(&Principal::anonymous(), Permission::Manage, "x"));
    }

    #[test]
    fn users_groups_anonymous_and_everyone() {
        let rules = AccessRules::new(vec![
            rule("orders.#", &["alice", "@traders"], &["*"]),
            rule("public", &["anonymous"], &[]),
        ])
        .unwrap();
        let alice = user("alice", &[]);
        let bob = user("bob", &["traders"]);
        let eve = user("eve", &["guests"]);
        let anon = Principal::anonymous();
        assert!(rules.allows(&alice, Permission::Send, "orders.eu"));
        assert!(rules.allows(&bob, Permission::Send, "orders"));
        assert!(!rules.allows(&eve, Permission::Send, "orders.eu"));
        assert!(rules.allows(&eve, Permission::Receive, "orders.eu"));
        assert!(rules.allows(&anon, Permission::Receive, "orders.eu"));
        assert!(!rules.allows(&alice, Permission::Create, "orders.eu"));
        assert!(rules.allows(&anon, Permission::Send, "public"));
        assert!(!rules.allows(&alice, Permission::Send, "public"));
        assert!(
            !rules.allows(&alice, Permission::Send, "elsewhere"),
            "no rule: denied"
        );
    }

    #[test]
    fn the_most_specific_entry_decides_alone() {
        let rules = AccessRules::new(vec![
            rule("#", &["*"], &["*"]),
            rule("orders.#", &["@traders"], &["*"]),
            rule("orders.audit", &[], &["auditor"]),
            rule("orders.*", &["@traders", "robot"], &["*"]),
        ])
        .unwrap();
        let robot = user("robot", &[]);
        let trader = user("t", &["traders"]);
        assert!(
            rules.allows(&robot, Permission::Send, "orders.eu"),
            "orders.* wins"
        );
        assert!(
            !rules.allows(&robot, Permission::Send, "orders.eu.fr"),
            "orders.# wins"
        );
        assert!(!rules.allows(&trader, Permission::Send, "orders.audit"));
        assert!(!rules.allows(&trader, Permission::Receive, "orders.audit"));
        assert!(rules.allows(&user("auditor", &[]), Permission::Receive, "orders.audit"));
        assert!(
            rules.allows(&robot, Permission::Send, "other"),
            "# catches the rest"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(AccessRules::new(vec![rule("a..b", &[], &[])]).is_err());
        assert!(AccessRules::new(vec![rule("a", &[], &[]), rule("a", &[], &[])]).is_err());
        assert!(AccessRules::new(vec![rule("a", &["@"], &[])]).is_err());
    }
}
