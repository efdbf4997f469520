use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::auth::ScramCredential;
use crate::core::settings::GroupOrdering;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Writes `text` to a temporary file and loads it with `vars` as the environment.
fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    Config::load_with_env(Some(file.path()), env(vars))
}

fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.problems(),
    }
}

#[test]
fn default_toml_is_exactly_the_default_config() {
    let parsed: Config = toml::from_str(Config::DEFAULT_TOML).unwrap();
    assert_eq!(parsed, Config::default());
    let loaded = Config::load_with_env(None, no_env()).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn default_toml_is_the_file_in_conf() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/ordo.toml");
    assert_eq!(std::fs::read_to_string(path).unwrap(), Config::DEFAULT_TOML);
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.listener.address, "127.0.0.1");
    assert_eq!(c.listener.port, 5672);
    assert_eq!(c.listener.max_frame_size, 1 << 20);
    assert_eq!(c.listener.channel_max, 255);
    assert_eq!(c.listener.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.listener.handshake_timeout, Duration::from_secs(10));
    assert!(c.sasl.allow_anonymous);
    assert!(c.users.is_empty());
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_message_size, 64 << 20);
    assert_eq!(c.limits.max_links_per_session, 1024);
    assert_eq!(c.limits.producer_credit, 1000);
    assert_eq!(c.store.path, PathBuf::from("./data"));
    assert_eq!(c.store.sync, SyncPolicy::Always);
    assert!(c.broker.auto_create);
    assert!(c.queues.is_empty() && c.topics.is_empty());
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.logging.format, LogFormat::Text);
    assert!(c.validate().is_ok());
}

#[test]
fn an_empty_file_gives_the_defaults() {
    assert_eq!(load_text("", &[]).unwrap(), Config::default());
}

#[test]
fn the_default_config_round_trips_through_toml() {
    let text = toml::to_string(&Config::default()).unwrap();
    assert_eq!(toml::from_str::<Config>(&text).unwrap(), Config::default());
}

#[test]
fn a_full_file_is_read() {
    let credential = ScramCredential::generate("pw", 16).to_string();
    let config = load_text(
        &format!(
            r##"
            [listener]
            address = "0.0.0.0"
            port = 5673
            idle-timeout = 0
            [sasl]
            allow-anonymous = false
            [[users]]
            name = "alice"
            password = "{credential}"
            [store]
            sync = "100ms"
            [[queues]]
            pattern = "orders.#"
            group-ordering = "strict"
            x-single-active-consumer = true
            [[queues]]
            pattern = "#"
            max-length = 10
            [[topics]]
            pattern = "prices.*"
            [logging]
            format = "json"
            level = "ordo=debug,warn"
            "##
        ),
        &[],
    )
    .unwrap();
    assert_eq!(config.listener.address, "0.0.0.0");
    assert_eq!(config.listener.port, 5673);
    assert_eq!(config.listener.idle_timeout, Duration::ZERO);
    assert_eq!(config.users[0].name, "alice");
    assert_eq!(
        config.store.sync,
        SyncPolicy::Interval(Duration::from_millis(100))
    );
    assert_eq!(config.logging.format, LogFormat::Json);

    let orders = config.queue_settings("orders.eu");
    assert_eq!(orders.group_ordering, GroupOrdering::Strict);
    assert!(orders.exclusive);
    assert_eq!(
        orders.max_length, None,
        "entries do not inherit from each other"
    );
    assert_eq!(
        config.queue_settings("orders").group_ordering,
        GroupOrdering::Strict
    );
    assert_eq!(config.queue_settings("invoices").max_length, Some(10));
    assert!(config.is_topic("prices.fx"));
    assert!(!config.is_topic("prices"));
}

#[test]
fn queue_settings_fall_back_to_the_defaults() {
    let mut config = Config::default();
    config.queues.push(QueueConfig {
        pattern: "orders.*".to_owned(),
        settings: QueueSettings {
            max_groups: 5,
            ..QueueSettings::default()
        },
    });
    assert_eq!(config.queue_settings("orders.eu").max_groups, 5);
    assert_eq!(config.queue_settings("orders"), QueueSettings::default());
    assert_eq!(config.queue_settings("other"), QueueSettings::default());
}

#[test]
fn sync_policy_forms() {
    let sync =
        |value: &str| load_text(&format!("[store]\nsync = {value}\n"), &[]).map(|c| c.store.sync);
    assert_eq!(sync("\"always\"").unwrap(), SyncPolicy::Always);
    assert_eq!(
        sync("\"5ms\"").unwrap(),
        SyncPolicy::Interval(Duration::from_millis(5))
    );
    assert_eq!(
        sync("2").unwrap(),
        SyncPolicy::Interval(Duration::from_secs(2))
    );
    for bad in ["\"sometimes\"", "0", "\"0ms\"", "true"] {
        let err = sync(bad).unwrap_err().to_string();
        assert!(err.contains("store.sync"), "{bad}: {err}");
    }
    assert_eq!(SyncPolicy::Always.to_string(), "always");
    assert_eq!(
        SyncPolicy::Interval(Duration::from_millis(100)).to_string(),
        "100ms"
    );
}

#[test]
fn environment_overrides_scalar_keys() {
    let config = load_text(
        "[listener]\nport = 1234\n",
        &[
            ("ORDO_LISTENER__PORT", "5673"),
            ("ORDO_LIMITS__MAX_MESSAGE_SIZE", "1024"),
            ("ORDO_SASL__ALLOW_ANONYMOUS", "false"),
            ("ORDO_LISTENER__IDLE_TIMEOUT", "90"),
            ("ORDO_LISTENER__HANDSHAKE_TIMEOUT", "500ms"),
            ("ORDO_STORE__PATH", "/var/lib/ordo"),
            ("ORDO_STORE__SYNC", "250ms"),
            ("ORDO_LOGGING__FORMAT", "json"),
            ("ORDO_BROKER__AUTO_CREATE", "false"),
            ("PATH", "/usr/bin"),
            ("ORDOX", "ignored: not our prefix"),
        ],
    );
    // allow-anonymous = false with no users is a problem; that is checked
    // elsewhere, so add a user through the file instead.
    let problems = problems(config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("allow-anonymous"), "{problems:?}");

    let credential = ScramCredential::generate("pw", 16).to_string();
    let config = load_text(
        &format!("[listener]\nport = 1234\n[[users]]\nname = \"a\"\npassword = \"{credential}\"\n"),
        &[
            ("ORDO_LISTENER__PORT", "5673"),
            ("ORDO_LIMITS__MAX_MESSAGE_SIZE", "1024"),
            ("ORDO_SASL__ALLOW_ANONYMOUS", "false"),
            ("ORDO_LISTENER__IDLE_TIMEOUT", "90"),
            ("ORDO_LISTENER__HANDSHAKE_TIMEOUT", "500ms"),
            ("ORDO_STORE__PATH", "/var/lib/ordo"),
            ("ORDO_STORE__SYNC", "250ms"),
            ("ORDO_LOGGING__FORMAT", "json"),
            ("ORDO_BROKER__AUTO_CREATE", "false"),
        ],
    )
    .unwrap();
    assert_eq!(config.listener.port, 5673);
    assert_eq!(config.limits.max_message_size, 1024);
    assert!(!config.sasl.allow_anonymous);
    assert_eq!(config.listener.idle_timeout, Duration::from_secs(90));
    assert_eq!(
        config.listener.handshake_timeout,
        Duration::from_millis(500)
    );
    assert_eq!(config.store.path, PathBuf::from("/var/lib/ordo"));
    assert_eq!(
        config.store.sync,
        SyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!(config.logging.format, LogFormat::Json);
    assert!(!config.broker.auto_create);
}

#[test]
fn environment_overrides_apply_to_the_built_in_default() {
    let config =
        Config::load_with_env(None, env(&[("ORDO_LISTENER__ADDRESS", "0.0.0.0")])).unwrap();
    assert_eq!(config.listener.address, "0.0.0.0");
}

#[test]
fn bad_environment_variables_are_all_reported_by_name() {
    let problems = problems(load_text(
        "",
        &[
            ("ORDO_LISTENER__PROT", "1"),
            ("ORDO_LISTNER__PORT", "1"),
            ("ORDO_QUEUES__PATTERN", "x"),
            ("ORDO_PORT", "1"),
        ],
    ));
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].starts_with("ORDO_LISTENER__PROT: section [listener] has no key `prot`"));
    assert!(problems[1].starts_with("ORDO_LISTNER__PORT: there is no section [listner]"));
    assert!(problems[2].contains("[[queues]] entries can only be set in the configuration file"));
    assert!(problems[3].contains("ORDO_PORT: expected ORDO_<SECTION>__<KEY>"));
}

#[test]
fn a_badly_typed_environment_value_names_the_variable() {
    let err = load_text("", &[("ORDO_LISTENER__PORT", "eighty")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("listener.port"), "{text}");
    assert!(text.contains("ORDO_LISTENER__PORT"), "{text}");
}

#[test]
fn unknown_keys_in_the_file_are_refused_by_name() {
    for (text, key) in [
        ("[listener]\nprot = 1\n", "prot"),
        ("[listner]\nport = 1\n", "listner"),
        ("[[users]]\nname = \"a\"\npasword = \"x\"\n", "pasword"),
        (
            "[[queues]]\npattern = \"a\"\ngroup-odering = \"strict\"\n",
            "group-odering",
        ),
        (
            "[[topics]]\npattern = \"a\"\nexclusive = true\n",
            "exclusive",
        ),
        ("[logging]\nlevel = \"info\"\ncolour = true\n", "colour"),
    ] {
        let err = load_text(text, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("`{key}`")),
            "{key}: {err}"
        );
    }
}

#[test]
fn wrong_types_name_the_key() {
    let err = load_text("[listener]\nport = \"http\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("listener.port"), "{err}");
    let err = load_text("[[queues]]\npattern = \"a\"\nmax-groups = -3\n", &[]).unwrap_err();
    assert!(err.to_string().contains("`max-groups`"), "{err}");
    assert!(err.to_string().contains("`queues[0]`"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let err = load_text("[logging]\nformat = \"xml\"\n", &[]).unwrap_err();
    assert!(
        err.to_string().contains("expected `text` or `json`"),
        "{err}"
    );
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[listener\nport = 1\n").unwrap();
    let err = Config::load_with_env(Some(file.path()), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&file.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_a_read_error() {
    let err =
        Config::load_with_env(Some(Path::new("/nonexistent/ordo.toml")), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/ordo.toml"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let good = ScramCredential::generate("pw", 16).to_string();
    let text = format!(
        r##"
        [listener]
        address = ""
        max-frame-size = 100
        handshake-timeout = 0
        idle-timeout = "100d"
        [[users]]
        name = "alice"
        password = "plain-text-password"
        [[users]]
        name = "bob"
        password = "{good}"
        [[users]]
        name = "bob"
        password = "{good}"
        [[users]]
        password = "{good}"
        [limits]
        max-message-size = 0
        max-links-per-session = 0
        producer-credit = 0
        [store]
        path = ""
        [[queues]]
        pattern = ""
        [[queues]]
        pattern = "orders..eu"
        [[queues]]
        pattern = "ord*"
        dead-letter-address = ""
        max-bytes = 0
        [[queues]]
        pattern = "a"
        [[queues]]
        pattern = "a"
        [[topics]]
        pattern = "prices.#.x#"
        [logging]
        level = "ordo=loud"
        "##
    );
    let problems = problems(load_text(&text, &[]));
    let expected = [
        "listener.address must not be empty",
        "listener.max-frame-size = 100: must be at least 512",
        "listener.idle-timeout",
        "listener.handshake-timeout must be more than 0",
        "users[0].password (user `alice`): not a SCRAM-SHA-256 credential",
        "users[2]: user `bob` is already defined by users[1]",
        "users[3].name must not be empty",
        "limits.max-message-size",
        "limits.max-links-per-session",
        "limits.producer-credit",
        "store.path must not be empty",
        "queues[0] (pattern \"\"): pattern must not be empty",
        "queues[1] (pattern \"orders..eu\"): pattern `orders..eu` has an empty word",
        "queues[2] (pattern \"ord*\"): pattern `ord*`: a wildcard must be a whole word",
        "queues[2] (pattern \"ord*\"): dead-letter-address must not be empty",
        "queues[2] (pattern \"ord*\"): max-bytes must be at least 1",
        "queues[4] (pattern \"a\"): queues[3] has the same pattern",
        "topics[0] (pattern \"prices.#.x#\")",
        "logging.level = \"ordo=loud\"",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, expected) in problems.iter().zip(expected) {
        assert!(
            problem.starts_with(expected),
            "{problem:?} should start with {expected:?}"
        );
    }
}

#[test]
fn invalid_display_lists_every_problem() {
    let err = ConfigError::Invalid(vec!["a is wrong".to_owned(), "b is wrong".to_owned()]);
    assert_eq!(
        err.to_string(),
        "invalid configuration (2 problems):\n  - a is wrong\n  - b is wrong"
    );
}
