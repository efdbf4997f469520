//! Queue settings: what a queue's configuration says about exclusivity, groups,
//! redelivery, dead-lettering, durability and limits (SPEC §2–§6, §8).
//!
//! The same settings come from two places, so they share one set of kebab-case
//! names: `[[queues]]` entries of the configuration file (deserialized with serde)
//! and `queue.<setting>=<value>` destination options on the attach that creates a
//! queue (applied one at a time with [`QueueSettings::set`]).
//!
//! This module is protocol-neutral: it knows nothing of AMQP or of the file format.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a queue setting could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// The key names no queue setting; the client (or operator) mistyped it, and
    /// silently ignoring it would leave the queue with settings nobody asked for.
    #[error("unknown queue setting `{0}`")]
    UnknownKey(String),
    /// The key is known but its value does not parse as that setting's type.
    #[error("invalid value `{value}` for queue setting `{key}`: expected {expected}")]
    InvalidValue {
        /// The setting's canonical name, so the message points at the right option.
        key: &'static str,
        /// The value as given, echoed back so the user sees what was wrong.
        value: String,
        /// What would have been accepted, in words.
        expected: &'static str,
    },
}

/// How messages of one group are dispatched (SPEC §5, §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupOrdering {
    /// Groups are pinned to an owner, but several messages of a group may be
    /// unsettled at once (Artemis-style message groups).
    #[default]
    None,
    /// At most one unsettled delivery per group: the next message of a group is
    /// dispatched only once the previous one is accepted (and committed).
    Strict,
}

/// What happens to a message that reached `max-delivery-attempts` (SPEC §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoisonPolicy {
    /// Move it to the dead-letter address and let its group go on.
    #[default]
    DeadLetter,
    /// Keep it at the head of its group and stop the group until an operator
    /// decides, so that order is never broken.
    Hold,
}

/// What a queue does with a new message when it is full (SPEC §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Refuse the new message (`amqp:resource-limit-exceeded`): nothing already
    /// accepted is lost.
    #[default]
    Reject,
    /// Discard the oldest queued message to make room, for feeds where only
    /// recent messages matter.
    DropOldest,
}

/// The settings of one queue. Every field has a default, so a `[[queues]]` entry
/// only names what differs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Every consumer of the queue is exclusive: one active at a time, the others
    /// stand by (RabbitMQ's and Broker-J's single active consumer, hence the alias).
    #[serde(alias = "x-single-active-consumer")]
    pub exclusive: bool,
    /// Whether a group may have more than one unsettled delivery at a time.
    pub group_ordering: GroupOrdering,
    /// Cap on live groups per queue, beyond which new groups are hashed into that
    /// many buckets so memory stays bounded; 0 means no cap.
    pub max_groups: u32,
    /// How long a group with no queued and no unsettled messages is remembered
    /// (keeping its owner) before it is forgotten; 0 forgets it at once.
    #[serde(with = "duration")]
    pub group_idle_timeout: Duration,
    /// How long an operator rebalance waits for a group's unsettled messages to
    /// settle before giving up and leaving the group where it is.
    #[serde(with = "duration")]
    pub group_handover_timeout: Duration,
    /// Deliveries after which a message counts as poison; 0 means unlimited.
    pub max_delivery_attempts: u32,
    /// What to do with a poison message.
    pub poison: PoisonPolicy,
    /// Where dead-lettered messages go; this address always exists.
    pub dead_letter_address: String,
    /// Where expired messages go; `None` drops them.
    pub expiry_address: Option<String>,
    /// Whether the queue itself survives a restart (messages persist only when
    /// their `header.durable` is set as well).
    pub durable: bool,
    /// Cap on queued messages; `None` means no cap.
    pub max_length: Option<u64>,
    /// Cap on the bytes of queued messages; `None` means no cap.
    pub max_bytes: Option<u64>,
    /// What a full queue does with a new message.
    pub overflow: OverflowPolicy,
    /// How long a message whose delivery failed (modified as failed, rolled back,
    /// or left unsettled by a consumer that went away) waits before it is offered
    /// again, so a failing consumer does not spin. Inside a group, and on an
    /// exclusive queue, the messages behind it wait too: nothing overtakes it.
    #[serde(with = "duration")]
    pub redelivery_delay: Duration,
    /// Duplicate detection: how many recent message ids (`_AMQ_DUPL_ID`, else
    /// `properties.message-id`) the queue remembers; a message whose id it
    /// remembers is accepted and dropped. 0 turns detection off.
    pub duplicate_window: u64,
    /// Duplicate detection: how long an id is remembered; 0 means no time
    /// limit (only `duplicate-window` bounds the ids kept).
    #[serde(with = "duration")]
    pub duplicate_window_time: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            exclusive: false,
            group_ordering: GroupOrdering::None,
            max_groups: 0,
            group_idle_timeout: Duration::from_secs(300),
            group_handover_timeout: Duration::from_secs(30),
            max_delivery_attempts: 10,
            poison: PoisonPolicy::DeadLetter,
            dead_letter_address: "DLQ".to_owned(),
            expiry_address: None,
            durable: true,
            max_length: None,
            max_bytes: None,
            overflow: OverflowPolicy::Reject,
            redelivery_delay: Duration::ZERO,
            duplicate_window: 0,
            duplicate_window_time: Duration::ZERO,
        }
    }
}

impl QueueSettings {
    /// Applies one `queue.<key>=<value>` destination option (key without the
    /// `queue.` prefix, same kebab names as the config, value as the string from
    /// the address). Errors name the key and say what was wrong.
    ///
    /// Booleans are `true`/`false`, durations as in the config file (`30s`,
    /// `500ms`, `5m`, or digits meaning seconds), and an empty value clears the
    /// optional settings (`expiry-address`, `max-length`, `max-bytes`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        match key {
            "exclusive" | "x-single-active-consumer" => {
                self.exclusive = parse_bool("exclusive", value)?;
            }
            "group-ordering" => {
                self.group_ordering = match value {
                    "none" => GroupOrdering::None,
                    "strict" => GroupOrdering::Strict,
                    _ => return Err(invalid("group-ordering", value, "`none` or `strict`")),
                };
            }
            "max-groups" => self.max_groups = parse_number("max-groups", value)?,
            "group-idle-timeout" => {
                self.group_idle_timeout = parse_duration_setting("group-idle-timeout", value)?;
            }
            "group-handover-timeout" => {
                self.group_handover_timeout =
                    parse_duration_setting("group-handover-timeout", value)?;
            }
            "max-delivery-attempts" => {
                self.max_delivery_attempts = parse_number("max-delivery-attempts", value)?;
            }
            "poison" => {
                self.poison = match value {
                    "dead-letter" => PoisonPolicy::DeadLetter,
                    "hold" => PoisonPolicy::Hold,
                    _ => return Err(invalid("poison", value, "`dead-letter` or `hold`")),
                };
            }
            "dead-letter-address" => {
                if value.is_empty() {
                    return Err(invalid("dead-letter-address", value, "a non-empty address"));
                }
                self.dead_letter_address = value.to_owned();
            }
            "expiry-address" => {
                self.expiry_address = (!value.is_empty()).then(|| value.to_owned());
            }
            "durable" => self.durable = parse_bool("durable", value)?,
            "max-length" => self.max_length = parse_optional_number("max-length", value)?,
            "max-bytes" => self.max_bytes = parse_optional_number("max-bytes", value)?,
            "overflow" => {
                self.overflow = match value {
                    "reject" => OverflowPolicy::Reject,
                    "drop-oldest" => OverflowPolicy::DropOldest,
                    _ => return Err(invalid("overflow", value, "`reject` or `drop-oldest`")),
                };
            }
            "redelivery-delay" => {
                self.redelivery_delay = parse_duration_setting("redelivery-delay", value)?;
            }
            "duplicate-window" => {
                self.duplicate_window = parse_number("duplicate-window", value)?;
            }
            "duplicate-window-time" => {
                self.duplicate_window_time =
                    parse_duration_setting("duplicate-window-time", value)?;
            }
            _ => return Err(SettingError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }

    /// Everything wrong with these settings taken together, as sentences naming
    /// the setting; empty when they are usable. The config's `validate` and the
    /// attach path (after [`QueueSettings::set`]) share this check.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dead_letter_address.is_empty() {
            problems.push("dead-letter-address must not be empty".to_owned());
        }
        if self.expiry_address.as_deref() == Some("") {
            problems.push(
                "expiry-address must not be empty (leave it out to drop expired messages)"
                    .to_owned(),
            );
        }
        if self.max_length == Some(0) {
            problems.push("max-length must be at least 1 (leave it out for no limit)".to_owned());
        }
        if self.max_bytes == Some(0) {
            problems.push("max-bytes must be at least 1 (leave it out for no limit)".to_owned());
        }
        problems
    }
}

fn invalid(key: &'static str, value: &str, expected: &'static str) -> SettingError {
    SettingError::InvalidValue {
        key,
        value: value.to_owned(),
        expected,
    }
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, SettingError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "`true` or `false`")),
    }
}

fn parse_number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, SettingError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, "a non-negative integer"))
}

fn parse_optional_number(key: &'static str, value: &str) -> Result<Option<u64>, SettingError> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_number(key, value).map(Some)
}

fn parse_duration_setting(key: &'static str, value: &str) -> Result<Duration, SettingError> {
    parse_duration(value).map_err(|_| invalid(key, value, DURATION_EXPECTED))
}

/// How a duration is written, for error messages.
const DURATION_EXPECTED: &str =
    "a duration such as `30s`, `500ms`, `5m`, `1h`, or a whole number of seconds";

/// Parses a duration as written in the config file, an environment variable or a
/// destination option: digits alone mean seconds (`"30"`), otherwise digits
/// followed by one unit of `ms`, `s`, `m`, `h` or `d` (`"500ms"`, `"5m"`).
///
/// Deliberately small: one number and one unit covers every timeout Ordo has, and
/// anything fancier would be one more syntax for operators to learn.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not {DURATION_EXPECTED}"))?;
    let seconds_per_unit = match unit.trim_start() {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` is not {DURATION_EXPECTED}")),
    };
    number
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Formats a duration the way [`parse_duration`] reads it, choosing the largest
/// unit that keeps it exact, so printed configs round-trip.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".to_owned(),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Serde support for durations in configuration: an integer number of seconds or
/// a string read by [`parse_duration`]; written back as such a string. Use with
/// `#[serde(with = "ordo::core::settings::duration")]`.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `value` as a string such as `"30s"`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*value))
    }

    /// Reads an integer number of seconds or a string such as `"500ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(super::DURATION_EXPECTED)
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(seconds), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }
}

/// Artemis-style address pattern match: words separated by `.`, `*` matches
/// exactly one word, `#` matches zero or more words; anything else is literal.
///
/// `orders.#` matches `orders` and `orders.eu.x`; `orders.*` matches `orders.eu`
/// but not `orders`. Runs in time proportional to pattern words × name words, so a
/// pattern with many `#` cannot be made slow by a long name.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let name: Vec<&str> = name.split('.').collect();
    // matched[j]: the pattern words seen so far match the first j name words.
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    for word in pattern.split('.') {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match word {
                "#" => matched[j] || (j > 0 && next[j - 1]),
                "*" => j > 0 && matched[j - 1],
                literal => j > 0 && matched[j - 1] && name[j - 1] == literal,
            };
        }
        matched = next;
    }
    matched[name.len()]
}

/// Why a pattern cannot be used, if it cannot: empty, an empty word (`a..b`,
/// leading or trailing `.`), or a wildcard inside a word (`ord*`), which would
/// match literally and is almost certainly a mistake.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return Some("pattern must not be empty (use `#` to match every name)".to_owned());
    }
    for word in pattern.split('.') {
        if word.is_empty() {
            return Some(format!("pattern `{pattern}` has an empty word"));
        }
        if word != "#" && word != "*" && word.contains(['#', '*']) {
            return Some(format!(
                "pattern `{pattern}`: a wildcard must be a whole word (`{word}` is not)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = QueueSettings::default();
        assert!(!s.exclusive);
        assert_eq!(s.group_ordering, GroupOrdering::None);
        assert_eq!(s.max_groups, 0);
        assert_eq!(s.group_idle_timeout, Duration::from_secs(300));
        assert_eq!(s.group_handover_timeout, Duration::from_secs(30));
        assert_eq!(s.max_delivery_attempts, 10);
        assert_eq!(s.poison, PoisonPolicy::DeadLetter);
        assert_eq!(s.dead_letter_address, "DLQ");
        assert_eq!(s.expiry_address, None);
        assert!(s.durable);
        assert_eq!(s.max_length, None);
        assert_eq!(s.max_bytes, None);
        assert_eq!(s.overflow, OverflowPolicy::Reject);
        assert_eq!(s.redelivery_delay, Duration::ZERO);
        assert!(s.problems().is_empty());
    }

    #[test]
    fn an_empty_table_deserializes_to_the_defaults() {
        let s: QueueSettings = toml::from_str("").unwrap();
        assert_eq!(s, QueueSettings::default());
    }

    #[test]
    fn kebab_names_alias_and_durations_deserialize() {
        let s: QueueSettings = toml::from_str(
            r#"
            x-single-active-consumer = true
            group-ordering = "strict"
            group-idle-timeout = 60
            group-handover-timeout = "500ms"
            redelivery-delay = "2m"
            poison = "hold"
            overflow = "drop-oldest"
            max-length = 100
            expiry-address = "EXPIRED"
            "#,
        )
        .unwrap();
        assert!(s.exclusive);
        assert_eq!(s.group_ordering, GroupOrdering::Strict);
        assert_eq!(s.group_idle_timeout, Duration::from_secs(60));
        assert_eq!(s.group_handover_timeout, Duration::from_millis(500));
        assert_eq!(s.redelivery_delay, Duration::from_secs(120));
        assert_eq!(s.poison, PoisonPolicy::Hold);
        assert_eq!(s.overflow, OverflowPolicy::DropOldest);
        assert_eq!(s.max_length, Some(100));
        assert_eq!(s.expiry_address.as_deref(), Some("EXPIRED"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = toml::from_str::<QueueSettings>("group-odering = \"strict\"").unwrap_err();
        assert!(err.to_string().contains("group-odering"), "{err}");
    }

    #[test]
    fn serialization_round_trips() {
        let s = QueueSettings {
            group_handover_timeout: Duration::from_millis(1500),
            max_bytes: Some(1 << 20),
            ..QueueSettings::default()
        };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<QueueSettings>(&text).unwrap(), s);
    }

    #[test]
    fn set_applies_every_setting() {
        let mut s = QueueSettings::default();
        for (key, value) in [
            ("exclusive", "true"),
            ("group-ordering", "strict"),
            ("max-groups", "64"),
            ("group-idle-timeout", "0"),
            ("group-handover-timeout", "5s"),
            ("max-delivery-attempts", "3"),
            ("poison", "hold"),
            ("dead-letter-address", "orders.DLQ"),
            ("expiry-address", "orders.expired"),
            ("durable", "false"),
            ("max-length", "1000"),
            ("max-bytes", "1048576"),
            ("overflow", "drop-oldest"),
            ("redelivery-delay", "250ms"),
            ("duplicate-window", "5000"),
            ("duplicate-window-time", "10m"),
        ] {
            s.set(key, value).unwrap();
        }
        let expected = QueueSettings {
            exclusive: true,
            group_ordering: GroupOrdering::Strict,
            max_groups: 64,
            group_idle_timeout: Duration::ZERO,
            group_handover_timeout: Duration::from_secs(5),
            max_delivery_attempts: 3,
            poison: PoisonPolicy::Hold,
            dead_letter_address: "orders.DLQ".to_owned(),
            expiry_address: Some("orders.expired".to_owned()),
            durable: false,
            max_length: Some(1000),
            max_bytes: Some(1_048_576),
            overflow: OverflowPolicy::DropOldest,
            redelivery_delay: Duration::from_millis(250),
            duplicate_window: 5000,
            duplicate_window_time: Duration::from_secs(600),
        };
        assert_eq!(s, expected);

        s.set("x-single-active-consumer", "FALSE").unwrap();
        s.set("max-length", "").unwrap();
        s.set("expiry-address", "").unwrap();
        assert!(!s.exclusive);
        assert_eq!(s.max_length, None);
        assert_eq!(s.expiry_address, None);
    }

    #[test]
    fn set_errors_name_the_key_and_the_problem() {
        let mut s = QueueSettings::default();
        let err = s.set("group-odering", "strict").unwrap_err();
        assert_eq!(err, SettingError::UnknownKey("group-odering".to_owned()));
        assert_eq!(err.to_string(), "unknown queue setting `group-odering`");

        let err = s.set("max-groups", "-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value `-1` for queue setting `max-groups`: expected a non-negative integer"
        );
        for (key, value) in [
            ("exclusive", "yes"),
            ("group-ordering", "STRICT"),
            ("group-idle-timeout", "5 parsecs"),
            ("poison", "drop"),
            ("overflow", "block"),
            ("dead-letter-address", ""),
            ("max-bytes", "1MB"),
        ] {
            let err = s.set(key, value).unwrap_err();
            assert!(
                matches!(&err, SettingError::InvalidValue { key: k, value: v, .. } if *k == key && v == value),
                "{key}={value}: {err}"
            );
        }
        assert_eq!(s, QueueSettings::default(), "failed sets change nothing");
    }

    #[test]
    fn problems_are_reported() {
        let s = QueueSettings {
            dead_letter_address: String::new(),
            max_length: Some(0),
            ..QueueSettings::default()
        };
        let problems = s.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("dead-letter-address"));
        assert!(problems[1].contains("max-length"));
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("10 s").unwrap(), Duration::from_secs(10));
        for bad in [
            "",
            "s",
            "-5s",
            "1.5s",
            "5 minutes",
            "5sm",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400), "1d"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d);
        }
    }

    #[test]
    fn negative_integer_durations_are_refused() {
        let err = toml::from_str::<QueueSettings>("redelivery-delay = -1").unwrap_err();
        assert!(err.to_string().contains("redelivery-delay"), "{err}");
    }

    #[test]
    fn multi_word_wildcard_matches_zero_or_more_words() {
        assert!(pattern_matches("orders.#", "orders"));
        assert!(pattern_matches("orders.#", "orders.eu"));
        assert!(pattern_matches("orders.#", "orders.eu.x"));
        assert!(!pattern_matches("orders.#", "ordersx"));
        assert!(!pattern_matches("orders.#", "shop.orders"));
        assert!(pattern_matches("#", "anything.at.all"));
        assert!(pattern_matches("#", ""));
        assert!(pattern_matches("#.dlq", "dlq"));
        assert!(pattern_matches("#.dlq", "a.b.dlq"));
        assert!(pattern_matches("a.#.z", "a.z"));
        assert!(pattern_matches("a.#.z", "a.b.c.z"));
        assert!(!pattern_matches("a.#.z", "a.b.c"));
        assert!(pattern_matches("#.#", "x"));
    }

    #[test]
    fn single_word_wildcard_matches_exactly_one_word() {
        assert!(pattern_matches("orders.*", "orders.eu"));
        assert!(!pattern_matches("orders.*", "orders"));
        assert!(!pattern_matches("orders.*", "orders.eu.x"));
        assert!(pattern_matches("*.prices", "fx.prices"));
        assert!(pattern_matches("*.*", "a.b"));
        assert!(!pattern_matches("*", "a.b"));
    }

    #[test]
    fn other_patterns_are_literal() {
        assert!(pattern_matches("orders", "orders"));
        assert!(!pattern_matches("orders", "Orders"));
        assert!(!pattern_matches("orders", "orders.eu"));
        assert!(pattern_matches("ord*", "ord*"));
        assert!(!pattern_matches("ord*", "orders"));
        assert!(pattern_matches("queue://x", "queue://x"));
    }

    #[test]
    fn many_multi_word_wildcards_stay_fast() {
        let pattern = vec!["#"; 50].join(".") + ".end";
        let name = vec!["w"; 5000].join(".");
        assert!(!pattern_matches(&pattern, &name));
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(pattern_problem("orders.#").is_none());
        assert!(pattern_problem("*.prices").is_none());
        assert!(pattern_problem("").unwrap().contains("empty"));
        assert!(pattern_problem("a..b").unwrap().contains("empty word"));
        assert!(pattern_problem("orders.").unwrap().contains("empty word"));
        assert!(pattern_problem("ord*").unwrap().contains("whole word"));
    }
}
