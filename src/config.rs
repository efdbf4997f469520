//! The configuration: its structs and defaults, loading (TOML file plus
//! `ORDO_<SECTION>__<KEY>` environment overrides, read with the `config` crate)
//! and validation that reports every problem at once (SPEC §8).
//!
//! `conf/ordo.toml` is the commented default; [`Config::DEFAULT_TOML`] is that
//! file, and a test keeps it equal to [`Config::default`]. docs/CONFIG.md
//! describes every key.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::settings::{duration, pattern_matches, QueueSettings};

mod env;
#[cfg(test)]
mod tests;
mod validate;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, so the operator sees which one.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    /// The message names the key (and the environment variable when one set it).
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or "built-in default") the text came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// `ORDO_*` environment variables that do not name a scalar key.
    #[error("{}", bullet_list("bad ORDO_* environment variables", .0))]
    Environment(Vec<String>),
    /// The configuration parsed but makes no sense: every problem found, so the
    /// operator fixes them in one go rather than one per restart.
    #[error("{}", bullet_list("invalid configuration", .0))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every problem as one line each, for `ordo check-config`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Environment(problems) | ConfigError::Invalid(problems) => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

fn bullet_list(title: &str, items: &[String]) -> String {
    let count = items.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    let mut text = format!("{title} ({count} {noun}):");
    for item in items {
        text.push_str("\n  - ");
        text.push_str(item);
    }
    text
}

/// The whole configuration of one broker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Where clients connect and how connections are negotiated.
    pub listener: ListenerConfig,
    /// The TLS (amqps) listener and the TLS upgrade on the plain port.
    pub tls: TlsConfig,
    /// Which SASL mechanisms are offered.
    pub sasl: SaslConfig,
    /// The admin listener: HTTP API, metrics.
    pub admin: AdminConfig,
    /// Users who may log in with SASL PLAIN (TOML `[[users]]`).
    pub users: Vec<UserConfig>,
    /// Resource limits that protect the broker from clients.
    pub limits: LimitsConfig,
    /// Where and how durably messages are stored.
    pub store: StoreConfig,
    /// Broker-wide behaviour not tied to one queue.
    pub broker: BrokerConfig,
    /// Queue settings by address pattern, first match wins (TOML `[[queues]]`).
    pub queues: Vec<QueueConfig>,
    /// Address patterns that name topics rather than queues (TOML `[[topics]]`).
    pub topics: Vec<TopicConfig>,
    /// Who may send, receive, create and manage which addresses (TOML
    /// `[[access]]`); none: everyone may do everything.
    pub access: Vec<crate::core::access::AccessRule>,
    /// What is logged, and how.
    pub logging: LoggingConfig,
}

/// The AMQP listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Interface to bind; loopback by default so a fresh install is not exposed.
    pub address: String,
    /// TCP port; 0 lets the OS pick one (see `ordo run --port-file`).
    pub port: u16,
    /// Largest frame Ordo accepts and announces in Open; at least 512, the
    /// smallest AMQP allows. Larger messages span several frames.
    pub max_frame_size: u32,
    /// Highest channel (session) number per connection, announced in Open.
    pub channel_max: u16,
    /// A connection that sends nothing for this long is closed, so dead peers
    /// free their resources; announced in Open so peers heartbeat in time.
    /// 0 disables the check.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Time a new connection has to finish the protocol header, SASL and Open,
    /// so idle sockets cannot hold connection slots.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: "127.0.0.1".to_owned(),
            port: 5672,
            max_frame_size: 1024 * 1024,
            channel_max: 255,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// TLS: an `amqps` listener, and the AMQP TLS upgrade (protocol header
/// `AMQP 2 1 0 0`) on the plain port. On when `cert` and `key` are set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the server certificate chain, leaf first ("" = TLS off).
    pub cert: String,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Interface of the amqps listener; "" means the `[listener]` address.
    pub address: String,
    /// TCP port of the amqps listener; 0 picks a free one.
    pub port: u16,
    /// PEM file of the certificate authorities that sign client certificates.
    pub client_ca: String,
    /// Whether clients present certificates: `none`, `optional` (verified
    /// when given) or `required`. A verified certificate offers SASL EXTERNAL.
    pub client_auth: ClientAuth,
    /// Accept the AMQP TLS upgrade header on the plain port.
    pub upgrade: bool,
    /// Refuse unencrypted connections on the plain port (the upgrade header
    /// is still accepted).
    pub required: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: String::new(),
            key: String::new(),
            address: String::new(),
            port: 5671,
            client_ca: String::new(),
            client_auth: ClientAuth::None,
            upgrade: true,
            required: false,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// Whether TLS clients present certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Not asked for.
    #[default]
    None,
    /// Asked for and verified when given.
    Optional,
    /// A connection without a verified certificate fails its TLS handshake.
    Required,
}

impl<'de> Deserialize<'de> for ClientAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(serde::de::Error::custom(format!(
                "unknown client-auth `{other}`, expected `none`, `optional` or `required`"
            ))),
        }
    }
}

/// The admin listener (HTTP): the management API and Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// Interface; loopback by default.
    pub address: String,
    /// TCP port; 0 picks a free one (see `ordo run --admin-port-file`).
    pub port: u16,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            address: "127.0.0.1".to_owned(),
            port: 8672,
        }
    }
}

/// SASL (authentication) settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SaslConfig {
    /// Offer SASL ANONYMOUS and accept connections with no SASL layer, so a
    /// first client on loopback needs no credentials.
    pub allow_anonymous: bool,
    /// Failed logins one source address may have within
    /// `failed-login-window`; past it, its logins are refused (`sys-temp`)
    /// without checking until the window has passed. 0: no limit.
    pub max_failed_logins: u32,
    /// The window of `max-failed-logins`.
    #[serde(with = "duration")]
    pub failed_login_window: Duration,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            allow_anonymous: true,
            max_failed_logins: 10,
            failed_login_window: Duration::from_secs(60),
        }
    }
}

/// One user who may authenticate with SASL PLAIN.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UserConfig {
    /// The SASL username.
    pub name: String,
    /// The SCRAM-SHA-256 credential (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
    /// made by `ordo hash-password`), never the plain password, so a leaked
    /// config file does not leak passwords.
    pub password: String,
    /// Groups the user belongs to, for `[[access]]` rules (`@group`).
    pub groups: Vec<String>,
}

/// Limits that keep one client from exhausting the broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections at most; further ones are refused. 0 means unlimited.
    pub max_connections: u32,
    /// Open connections one authenticated user may have; 0 means unlimited.
    pub max_connections_per_user: u32,
    /// Largest message accepted, in bytes; larger ones are rejected, so one
    /// producer cannot exhaust memory or the store.
    pub max_message_size: u64,
    /// Links one session may have attached at once.
    pub max_links_per_session: u32,
    /// Link credit Ordo grants each producer (and tops up as it settles), which
    /// bounds the messages in flight from one producer.
    pub producer_credit: u32,
    /// Unsettled deliveries one consumer link may hold, whatever credit it
    /// grants; more wait in the queue until it settles some. 0: no limit.
    pub max_unsettled_per_link: u32,
    /// Bytes of queued messages in memory past which producers get no more
    /// credit; past 1.25 times it their messages are rejected with
    /// `amqp:resource-limit-exceeded`. 0: 40% of the machine's memory.
    pub memory_high_watermark: u64,
    /// Bytes of messages still arriving in several frames, all connections
    /// together; a message that would take them past it is refused with
    /// `amqp:resource-limit-exceeded`. 0: the memory high-water mark.
    pub max_assembly_bytes: u64,
    /// Longest node name (queue, topic, subscription) in bytes; a longer
    /// address is refused with `amqp:invalid-field`, so names stored and
    /// shown stay small.
    pub max_address_length: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_message_size: 64 * 1024 * 1024,
            max_links_per_session: 1024,
            producer_credit: 1000,
            max_connections_per_user: 0,
            max_unsettled_per_link: 10_000,
            memory_high_watermark: 0,
            max_assembly_bytes: 0,
            max_address_length: 255,
        }
    }
}

/// The message store.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the store; created if missing.
    pub path: PathBuf,
    /// When writes reach the disk.
    pub sync: SyncPolicy,
    /// Bytes of the store's block cache (recently read messages and indexes).
    pub cache_size: u64,
    /// Bytes of queued messages kept in memory. Past it, bodies of durable
    /// messages stay on disk and are read back when they are delivered, so a
    /// backlog larger than memory keeps flowing.
    pub memory_limit: u64,
    /// Durable messages are refused (`amqp:resource-limit-exceeded`) while the
    /// store's disk has less than this many bytes free (RabbitMQ's disk alarm).
    /// 0 turns the check off.
    pub min_free_disk: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("./data"),
            sync: SyncPolicy::Always,
            cache_size: 64 * 1024 * 1024,
            memory_limit: 1024 * 1024 * 1024,
            min_free_disk: 50 * 1000 * 1000,
        }
    }
}

/// When the store forces writes to disk. Written in TOML as `"always"` or as a
/// duration (`"100ms"`), like NATS JetStream's `sync_interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every group-commit batch is fsynced before any producer in it is settled:
    /// an accepted durable message survives a power loss (SPEC §3).
    #[default]
    Always,
    /// Fsync at most once per interval; producers are settled once the write
    /// reaches the OS. A broker crash loses nothing, a machine crash may lose up
    /// to this much of accepted messages. For throughput over durability.
    Interval(Duration),
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Interval(interval) => {
                f.write_str(&crate::core::settings::format_duration(*interval))
            }
        }
    }
}

impl Serialize for SyncPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SyncPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The duration form, read by the shared duration deserializer.
        struct Interval(Duration);
        impl<'de> Deserialize<'de> for Interval {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                duration::deserialize(d).map(Interval)
            }
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Seconds(Interval),
        }
        let interval = match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected \"always\" or a duration such as \"100ms\"")
        })? {
            Raw::Word(word) if word == "always" => return Ok(SyncPolicy::Always),
            Raw::Word(word) => crate::core::settings::parse_duration(&word).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{word}` is neither \"always\" nor a duration such as \"100ms\""
                ))
            })?,
            Raw::Seconds(Interval(interval)) => interval,
        };
        if interval.is_zero() {
            return Err(serde::de::Error::custom(
                "a zero sync interval would mean no interval: write \"always\"",
            ));
        }
        Ok(SyncPolicy::Interval(interval))
    }
}

/// Broker-wide behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Create a queue or topic on first attach; when off, unknown addresses are
    /// refused with `amqp:not-found` (dead-letter and expiry addresses always exist).
    pub auto_create: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { auto_create: true }
    }
}

/// Settings for the queues whose names match a pattern.
///
/// Only `Serialize` is derived: see the hand-written `Deserialize` below.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct QueueConfig {
    /// Artemis-style address pattern (`orders.#`, `prices.*`, or an exact name).
    pub pattern: String,
    /// The settings of matching queues; keys left out take the defaults (not the
    /// values of another matching entry).
    #[serde(flatten)]
    pub settings: QueueSettings,
}

/// Deserialized by hand: the entry is read as a table, the pattern taken out and
/// the rest read as [`QueueSettings`] (which denies unknown keys). A derived
/// `#[serde(flatten)]` would refuse unknown keys too, but its errors neither list
/// the valid keys nor say which key had a bad value (`expected u32 for key
/// queues[0]`); this way they do.
impl<'de> Deserialize<'de> for QueueConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let pattern = match table.remove("pattern") {
            None => String::new(),
            Some(toml::Value::String(pattern)) => pattern,
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "pattern must be a string, not {}",
                    other.type_str()
                )))
            }
        };
        let settings = QueueSettings::deserialize(toml::Value::Table(table)).map_err(|e| {
            // toml puts "in `key`" on a line of its own; keep the message on one.
            let message = e.to_string();
            let words: Vec<&str> = message.split_whitespace().collect();
            serde::de::Error::custom(words.join(" "))
        })?;
        Ok(QueueConfig { pattern, settings })
    }
}

/// Addresses that are topics (each subscriber gets a copy) rather than queues.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Artemis-style address pattern of topic names.
    pub pattern: String,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing `EnvFilter` directive (`info`, `ordo=debug,warn`); `RUST_LOG`
    /// wins when set, so a developer can raise it without editing the file.
    pub level: String,
    /// Text for people, JSON for log collectors.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Read from a string by hand: the `config` crate's enum errors ("enum LogFormat
/// does not have variant constructor xml") would not tell the operator what to write.
impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(serde::de::Error::custom(format!(
                "unknown log format `{other}`, expected `text` or `json`"
            ))),
        }
    }
}

impl Config {
    /// The commented default configuration, byte-for-byte `conf/ordo.toml`.
    pub const DEFAULT_TOML: &'static str = include_str!("../conf/ordo.toml");

    /// Loads `path` (or the built-in default when None) plus
    /// `ORDO_<SECTION>__<KEY>` environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, std::env::vars())
    }

    /// Same as [`Config::load`], with an explicit environment (for tests; `load`
    /// passes `std::env::vars()`). Variables not starting with `ORDO_` are ignored.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config = Config::read_with_env(path, env)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load_with_env`] without the validation, for a caller that
    /// changes the result before validating it (`ordo run`'s `--listen` and
    /// `--data-dir`), so that a value the command line replaces is not judged.
    pub fn read_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (path.display().to_string(), text)
            }
            None => (
                "built-in default".to_owned(),
                Config::DEFAULT_TOML.to_owned(),
            ),
        };
        let overrides = env::overrides(env)?;
        let parse_error = |error: ::config::ConfigError| {
            let mut message = error.to_string();
            for o in &overrides {
                if message.contains(&format!("`{}`", o.key)) {
                    message.push_str(&format!(" (set by environment variable {})", o.var));
                }
            }
            ConfigError::Parse {
                origin: origin.clone(),
                message,
            }
        };
        let mut builder = ::config::Config::builder()
            .add_source(::config::File::from_str(&text, ::config::FileFormat::Toml));
        for o in &overrides {
            builder = builder
                .set_override(&o.key, o.value.as_str())
                .map_err(parse_error)?;
        }
        builder
            .build()
            .and_then(|source| source.try_deserialize())
            .map_err(parse_error)
    }

    /// Every problem at once (`ConfigError::Invalid`): frame size below 512, bad
    /// credential strings, duplicate users, empty or malformed patterns, ...
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Settings for a queue: the first `[[queues]]` entry whose pattern matches
    /// the name, else [`QueueSettings::default`].
    pub fn queue_settings(&self, name: &str) -> QueueSettings {
        self.queues
            .iter()
            .find(|queue| pattern_matches(&queue.pattern, name))
            .map(|queue| queue.settings.clone())
            .unwrap_or_default()
    }

    /// Whether a `[[topics]]` pattern matches `name`: the address layer makes
    /// such a node a topic when neither a prefix nor a capability says which.
    pub fn is_topic(&self, name: &str) -> bool {
        self.topics
            .iter()
            .any(|topic| pattern_matches(&topic.pattern, name))
    }
}
