//! Keeps docs/CONFIG.md true: every key documented, its example credential real.

use std::path::Path;

use ordo::auth::ScramCredential;
use ordo::config::Config;
use ordo::core::settings::QueueSettings;

fn config_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md")).unwrap()
}

#[test]
fn every_key_is_documented() {
    let docs = config_md();
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, value) in &defaults {
        match value {
            toml::Value::Table(keys) => {
                assert!(docs.contains(&format!("### `[{section}]`")), "[{section}]");
                for key in keys.keys() {
                    assert!(docs.contains(&format!("| `{key}` |")), "{section}.{key}");
                }
            }
            _ => assert!(
                docs.contains(&format!("### `[[{section}]]`")),
                "[[{section}]]"
            ),
        }
    }
    // Optional settings are left out when None; give them values to list them.
    let queue = QueueSettings {
        expiry_address: Some("x".to_owned()),
        max_length: Some(1),
        max_bytes: Some(1),
        ..QueueSettings::default()
    };
    for key in toml::Table::try_from(queue).unwrap().keys() {
        assert!(docs.contains(&format!("| `{key}` |")), "queues: {key}");
    }
}

#[test]
fn the_example_credential_is_for_the_example_password() {
    let docs = config_md();
    let start = docs.find("SCRAM-SHA-256$4096:").unwrap();
    let end = start + docs[start..].find(['\n', '"']).unwrap();
    let credential = ScramCredential::parse(&docs[start..end]).unwrap();
    assert!(credential.verify_password("correct horse"));
}
