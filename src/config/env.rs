//! `ORDO_<SECTION>__<KEY>` environment overrides (SPEC §8).
//!
//! `ORDO_LISTENER__PORT=5673` sets `listener.port`, `ORDO_LIMITS__MAX_MESSAGE_SIZE`
//! sets `limits.max-message-size`: section and key are lowercased and the key's
//! underscores become hyphens. Only scalar keys of the sections can be set;
//! `[[users]]`, `[[queues]]` and `[[topics]]` live in the file only.
//!
//! The `config` crate's own `Environment` source cannot turn underscores into
//! hyphens in the key alone, so the overrides are checked here and handed to
//! `set_override`. A variable that names no key is an error, not silently
//! ignored: a typo in a deployment's environment should not go unnoticed.

use std::collections::BTreeMap;

use super::{Config, ConfigError};

/// The prefix of Ordo's environment variables.
const PREFIX: &str = "ORDO_";

/// One environment variable that sets one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Override {
    /// The key as the `config` crate addresses it, e.g. `listener.max-frame-size`.
    pub(super) key: String,
    /// The variable's name, to point at it in error messages.
    pub(super) var: String,
    /// The value, as a string; the `config` crate converts it to the key's type.
    pub(super) value: String,
}

/// The overrides among `env`, or every malformed `ORDO_*` variable at once.
pub(super) fn overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let sections = scalar_keys()?;
    let mut overrides = Vec::new();
    let mut problems = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            problems.push(format!(
                "{var}: expected ORDO_<SECTION>__<KEY> (two underscores), such as ORDO_LISTENER__PORT"
            ));
            continue;
        };
        let section = section.to_lowercase();
        let key = key.to_lowercase().replace('_', "-");
        match sections.get(&section) {
            Some(Section::List) => problems.push(format!(
                "{var}: [[{section}]] entries can only be set in the configuration file"
            )),
            None => problems.push(format!("{var}: there is no section [{section}]")),
            Some(Section::Table(keys)) if !keys.contains(&key) => problems.push(format!(
                "{var}: section [{section}] has no key `{key}` (it has: {})",
                keys.join(", ")
            )),
            Some(Section::Table(_)) => overrides.push(Override {
                key: format!("{section}.{key}"),
                var,
                value,
            }),
        }
    }
    if problems.is_empty() {
        Ok(overrides)
    } else {
        Err(ConfigError::Environment(problems))
    }
}

/// What a top-level key of the configuration is.
enum Section {
    /// A table whose keys (listed) can be overridden.
    Table(Vec<String>),
    /// A list of tables, set in the file only.
    List,
}

/// The sections and their keys, read off the serialized default configuration so
/// that a new key is overridable without a list to keep in step.
fn scalar_keys() -> Result<BTreeMap<String, Section>, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).map_err(|e| {
        ConfigError::Environment(vec![format!(
            "cannot list the configuration keys to check ORDO_* variables against: {e}"
        )])
    })?;
    Ok(defaults
        .into_iter()
        .map(|(name, value)| {
            let section = match value {
                toml::Value::Table(table) => Section::Table(table.keys().cloned().collect()),
                _ => Section::List,
            };
            (name, section)
        })
        .collect())
}
