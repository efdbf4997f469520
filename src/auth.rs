//! User credentials and their verification, protocol-neutral.
//!
//! Passwords are never stored: a user's credential is kept in SCRAM-SHA-256 form
//! (RFC 5802, RFC 7677), written as PostgreSQL writes it:
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
//! ```
//!
//! where `SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations)`,
//! `ClientKey = HMAC(SaltedPassword, "Client Key")`, `StoredKey = SHA256(ClientKey)`
//! and `ServerKey = HMAC(SaltedPassword, "Server Key")`. That is enough to check a
//! SASL PLAIN password today and to run SASL SCRAM-SHA-256 later with no change
//! of format. `ordo hash-password` makes one.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// Why a credential could not be used or a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A credential string is not in the stored SCRAM-SHA-256 format; says which
    /// part is wrong (never echoing the keys).
    #[error("not a SCRAM-SHA-256 credential: {0}")]
    Malformed(String),
    /// A configured user's credential is malformed.
    #[error("user `{user}`: {reason}")]
    InvalidUser {
        /// The user, so the operator knows which entry to fix.
        user: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two users share a name, so which password applies would be ambiguous.
    #[error("user `{0}` is defined twice")]
    DuplicateUser(String),
    /// Unknown user or wrong password: deliberately one error, so a client
    /// cannot learn which user names exist.
    #[error("authentication failed")]
    BadCredentials,
}

/// The mechanism name that opens the stored format.
const SCHEME: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations when none are asked for: RFC 7677's minimum and
/// PostgreSQL's default.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of generated credentials, in bytes (as PostgreSQL uses).
const SALT_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// A user's SCRAM-SHA-256 credential: what the server keeps instead of the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// PBKDF2 iteration count: the cost of each guess for whoever steals the file.
    pub iterations: u32,
    /// Per-user salt, so equal passwords give different credentials.
    pub salt: Vec<u8>,
    /// SHA256(ClientKey): checks a client's proof (or a PLAIN password).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key"): lets the server prove itself in SCRAM.
    pub server_key: [u8; 32],
}

impl ScramCredential {
    /// Parses the stored format
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (standard
    /// base64 with padding).
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let malformed = |what: &str| AuthError::Malformed(what.to_owned());
        let mut parts = s.split('$');
        let (Some(scheme), Some(params), Some(keys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
            ));
        };
        if scheme != SCHEME {
            return Err(malformed("it does not start with SCRAM-SHA-256$"));
        }
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| malformed("expected <iterations>:<salt> after the first $"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| malformed("the iteration count is not a positive integer"))?;
        let salt = BASE64
            .decode(salt)
            .map_err(|_| malformed("the salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(malformed("the salt is empty"));
        }
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| malformed("expected <StoredKey>:<ServerKey> after the second $"))?;
        Ok(ScramCredential {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// A credential for `password` with a random 16-byte salt. Use
    /// [`DEFAULT_ITERATIONS`] unless there is a reason not to. Costs one PBKDF2
    /// run of `iterations`.
    pub fn generate(password: &str, iterations: u32) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        ScramCredential::derive(password, salt, iterations)
    }

    /// The credential for `password` with a given salt (RFC 5802 §3).
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        let (stored_key, server_key) = keys_from_salted_password(&salted);
        ScramCredential {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// Whether `password` is this credential's password. Costs one PBKDF2 run,
    /// whatever the answer, and compares in constant time; run it off the async
    /// executor (`spawn_blocking`), as it takes milliseconds.
    pub fn verify_password(&self, password: &str) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        let (stored_key, _) = keys_from_salted_password(&salted);
        stored_key.ct_eq(&self.stored_key).into()
    }
}

/// Written in the stored format, so `parse(c.to_string()) == c`.
impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

/// Leaves the keys out: they are password equivalents for SCRAM and must not
/// end up in logs.
impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .field("salt", &BASE64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

fn decode_key(text: &str, name: &str) -> Result<[u8; 32], AuthError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| AuthError::Malformed(format!("the {name} is not valid base64")))?;
    bytes
        .try_into()
        .map_err(|_| AuthError::Malformed(format!("the {name} is not 32 bytes long")))
}

/// SaltedPassword, from the password normalized with SASLprep (RFC 4013) as
/// SCRAM requires, so that a SCRAM client sending a non-ASCII password later
/// matches a credential made now. A password SASLprep refuses (control
/// characters, unassigned code points) is used as is, as PostgreSQL does.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let prepared = stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password));
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    salted
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// (StoredKey, ServerKey) from SaltedPassword.
fn keys_from_salted_password(salted: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let client_key = hmac(salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (stored_key, hmac(salted, b"Server Key"))
}

/// Decides who may connect: anonymous access and the configured users.
#[derive(Clone)]
pub struct Authenticator {
    /// Whether SASL ANONYMOUS (and connections with no SASL layer) are accepted.
    allow_anonymous: bool,
    /// Credentials by user name.
    users: HashMap<String, ScramCredential>,
    /// Each user's groups, for access rules.
    groups: HashMap<String, Vec<String>>,
    /// Checked against for unknown users, so that they cost as much as a wrong
    /// password and timing does not reveal which names exist.
    dummy: ScramCredential,
}

impl Authenticator {
    /// Built from the `[sasl]` section and `[[users]]` of a configuration.
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let mut users = HashMap::new();
        let mut groups = HashMap::new();
        for user in &config.users {
            let credential =
                ScramCredential::parse(&user.password).map_err(|e| AuthError::InvalidUser {
                    user: user.name.clone(),
                    reason: e.to_string(),
                })?;
            if users.insert(user.name.clone(), credential).is_some() {
                return Err(AuthError::DuplicateUser(user.name.clone()));
            }
            groups.insert(user.name.clone(), user.groups.clone());
        }
        // As slow as the slowest real user, so an unknown name is never the fast case.
        let iterations = users
            .values()
            .map(|c| c.iterations)
            .max()
            .unwrap_or(DEFAULT_ITERATIONS);
        let mut salt = vec![0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let dummy = ScramCredential {
            iterations,
            salt,
            // No password hashes to all zeros, so nothing matches the dummy.
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        Ok(Authenticator {
            allow_anonymous: config.sasl.allow_anonymous,
            users,
            groups,
            dummy,
        })
    }

    /// Whether anonymous clients may connect (SASL ANONYMOUS or no SASL layer).
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// The groups of a user (none for an unknown one).
    pub fn groups(&self, user: &str) -> Vec<String> {
        self.groups.get(user).cloned().unwrap_or_default()
    }

    /// SASL PLAIN check. `Err(AuthError::BadCredentials)` for an unknown user or
    /// a wrong password alike, at the same cost. CPU-bound for milliseconds: call
    /// it from `spawn_blocking`.
    pub fn check_plain(&self, username: &str, password: &str) -> Result<(), AuthError> {
        let (credential, known) = match self.users.get(username) {
            Some(credential) => (credential, true),
            None => (&self.dummy, false),
        };
        if credential.verify_password(password) && known {
            Ok(())
        } else {
            Err(AuthError::BadCredentials)
        }
    }
}

/// Lists the user names only: credentials stay out of logs.
impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Authenticator")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("users", &names)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    /// RFC 7677 §3's example: user "user", password "pencil", this salt, 4096
    /// iterations. The RFC publishes the exchange, not the keys; this stored form
    /// was computed from it and is checked against the RFC's proof and signature
    /// below.
    const RFC7677: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    /// Few iterations keep the tests fast; the cost does not change the logic.
    const FAST: u32 = 16;

    #[test]
    fn rfc7677_example_matches_the_published_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive("pencil", salt, 4096);
        assert_eq!(credential.to_string(), RFC7677);

        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!(
            "n=user,r={client_nonce},r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let client_key = hmac(
            &salted_password("pencil", &credential.salt, 4096),
            b"Client Key",
        );
        let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        assert_eq!(
            BASE64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        let parsed = ScramCredential::parse(RFC7677).unwrap();
        assert_eq!(parsed, credential);
        assert!(parsed.verify_password("pencil"));
        assert!(!parsed.verify_password("pencil "));
    }

    #[test]
    fn generated_credentials_round_trip_and_verify() {
        let credential = ScramCredential::generate("s3cret", FAST);
        assert_eq!(credential.iterations, FAST);
        assert_eq!(credential.salt.len(), SALT_LEN);
        let text = credential.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$16:"), "{text}");
        let parsed = ScramCredential::parse(&text).unwrap();
        assert_eq!(parsed, credential);
        assert_eq!(parsed.to_string(), text);
        assert!(parsed.verify_password("s3cret"));
        assert!(!parsed.verify_password("S3cret"));
        assert!(!parsed.verify_password(""));
    }

    #[test]
    fn salts_differ_between_credentials() {
        let a = ScramCredential::generate("same", FAST);
        let b = ScramCredential::generate("same", FAST);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn malformed_credentials_say_what_is_wrong() {
        let good = ScramCredential::generate("x", FAST).to_string();
        let (_, keys) = good.rsplit_once('$').unwrap();
        for (text, expected) in [
            ("hunter2", "expected SCRAM-SHA-256$"),
            ("SCRAM-SHA-1$4096:c2FsdA==$a:b", "does not start with"),
            ("SCRAM-SHA-256$4096$a:b", "<iterations>:<salt>"),
            (
                &format!("SCRAM-SHA-256$0:c2FsdA==${keys}"),
                "iteration count",
            ),
            (
                &format!("SCRAM-SHA-256$x:c2FsdA==${keys}"),
                "iteration count",
            ),
            (
                &format!("SCRAM-SHA-256$4096:!!!${keys}"),
                "salt is not valid base64",
            ),
            (&format!("SCRAM-SHA-256$4096:${keys}"), "salt is empty"),
            ("SCRAM-SHA-256$4096:c2FsdA==$abc", "<StoredKey>:<ServerKey>"),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==",
                "StoredKey is not 32 bytes",
            ),
            (&format!("{good}$extra"), "expected SCRAM-SHA-256$"),
        ] {
            let err = ScramCredential::parse(text).unwrap_err();
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn passwords_are_normalized_with_saslprep() {
        // RFC 4013: U+00A0 (no-break space) maps to a space, U+00AD (soft hyphen) to nothing.
        let credential = ScramCredential::generate("I\u{00AD}X a", FAST);
        assert!(credential.verify_password("IX a"));
        assert!(credential.verify_password("IX\u{00A0}a"));
        // Refused by SASLprep (a control character): used as is, still verifiable.
        let credential = ScramCredential::generate("a\u{0007}b", FAST);
        assert!(credential.verify_password("a\u{0007}b"));
        assert!(!credential.verify_password("ab"));
    }

    #[test]
    fn debug_output_hides_the_keys() {
        let credential = ScramCredential::parse(RFC7677).unwrap();
        let debug = format!("{credential:?}");
        assert!(!debug.contains("WG5d8oPm"), "{debug}");
        assert!(!debug.contains("wfPLwcE6"), "{debug}");
    }

    fn config_with_users(users: &[(&str, &str)]) -> Config {
        let mut config = Config::default();
        config.sasl.allow_anonymous = false;
        config.users = users
            .iter()
            .map(|(name, password)| UserConfig {
                name: (*name).to_owned(),
                password: ScramCredential::generate(password, FAST).to_string(),
                groups: Vec::new(),
            })
            .collect();
        config
    }

    #[test]
    fn check_plain_accepts_only_the_right_password() {
        let auth = Authenticator::from_config(&config_with_users(&[("alice", "a"), ("bob", "b")]))
            .unwrap();
        assert!(!auth.allow_anonymous());
        assert_eq!(auth.check_plain("alice", "a"), Ok(()));
        assert_eq!(auth.check_plain("bob", "b"), Ok(()));
        assert_eq!(
            auth.check_plain("alice", "b"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.check_plain("Alice", "a"),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn unknown_users_get_the_same_error_at_the_same_cost() {
        let auth = Authenticator::from_config(&config_with_users(&[("alice", "a")])).unwrap();
        assert_eq!(
            auth.check_plain("mallory", "a"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(auth.check_plain("", ""), Err(AuthError::BadCredentials));
        assert_eq!(auth.dummy.iterations, FAST);
        let debug = format!("{auth:?}");
        assert!(
            debug.contains("alice") && !debug.contains("SCRAM"),
            "{debug}"
        );
    }

    #[test]
    fn anonymous_follows_the_config() {
        let auth = Authenticator::from_config(&Config::default()).unwrap();
        assert!(auth.allow_anonymous());
        assert_eq!(
            auth.check_plain("guest", "guest"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(auth.dummy.iterations, DEFAULT_ITERATIONS);
    }

    #[test]
    fn bad_user_entries_are_refused() {
        let mut config = config_with_users(&[("alice", "a")]);
        config.users[0].password = "plain-text".to_owned();
        let err = Authenticator::from_config(&config).unwrap_err();
        assert!(matches!(err, AuthError::InvalidUser { ref user, .. } if user == "alice"));

        let mut config = config_with_users(&[("alice", "a")]);
        config.users.push(config.users[0].clone());
        assert_eq!(
            Authenticator::from_config(&config).unwrap_err(),
            AuthError::DuplicateUser("alice".to_owned())
        );
    }
}
