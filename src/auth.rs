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

// The one `expect` of the library: HMAC accepts keys of any length (longer
// ones are hashed, RFC 2104), so `new_from_slice` cannot fail.
#[allow(clippy::expect_used)]
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
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

/// The server side of one SASL SCRAM-SHA-256 exchange (RFC 5802, RFC 7677)
/// against the stored credentials: [`Authenticator::scram_start`] answers
/// the client-first message, [`ScramExchange::finish`] checks the client's
/// proof and returns the server's signature. Channel binding is not offered
/// (a client asking for it with `p=` is refused). An unknown user goes
/// through the same steps with a made-up credential and fails at the proof,
/// so the exchange does not tell which user names exist.
pub struct ScramExchange {
    /// The user name the client gave.
    user: String,
    /// Whether the user exists (the credential is real).
    known: bool,
    /// The user's credential (or the made-up one).
    credential: ScramCredential,
    /// The GS2 header, as the client sent it (`n,,`, `y,,`).
    gs2_header: String,
    /// client-first-message-bare.
    client_first_bare: String,
    /// server-first-message.
    server_first: String,
    /// Client nonce + server nonce.
    nonce: String,
}

/// A SCRAM attribute's value (`n=...`) if `part` is that attribute.
fn attribute(part: &str, name: char) -> Option<&str> {
    let mut chars = part.chars();
    (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
}

/// Decodes a SCRAM saslname (`=2C` is `,`, `=3D` is `=`).
fn saslname(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl Authenticator {
    /// Answers a SCRAM-SHA-256 client-first message with the server-first
    /// message. Refused (`BadCredentials`) when the message is malformed or
    /// asks for channel binding.
    pub fn scram_start(&self, client_first: &[u8]) -> Result<(ScramExchange, Vec<u8>), AuthError> {
        let text = std::str::from_utf8(client_first).map_err(|_| AuthError::BadCredentials)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::BadCredentials);
        };
        if flag != "n" && flag != "y" {
            // "p=...": channel binding, which this server does not offer.
            return Err(AuthError::BadCredentials);
        }
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| attribute(f, 'n'))
            .and_then(saslname)
            .ok_or(AuthError::BadCredentials)?;
        let client_nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::BadCredentials)?;
        if let Some(z) = attribute(authzid, 'a') {
            // Acting as another user is not supported.
            if saslname(z).as_deref() != Some(user.as_str()) {
                return Err(AuthError::BadCredentials);
            }
        }
        let (credential, known) = match self.users.get(&user) {
            Some(c) => (c.clone(), true),
            None => {
                // The same salt for the same unknown name every time, so
                // asking twice does not reveal that it is made up.
                let salt = hmac(&self.dummy.salt, user.as_bytes())[..SALT_LEN].to_vec();
                (
                    ScramCredential {
                        salt,
                        ..self.dummy.clone()
                    },
                    false,
                )
            }
        };
        let mut server_nonce = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            ScramExchange {
                user,
                known,
                credential,
                gs2_header: format!("{flag},{authzid},"),
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
            reply,
        ))
    }
}

impl ScramExchange {
    /// The user name the client gave (for logs; not yet authenticated).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client-final message; on success returns the user and
    /// the server-final message (`v=<ServerSignature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
        let text = std::str::from_utf8(client_final).map_err(|_| AuthError::BadCredentials)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(AuthError::BadCredentials)?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| attribute(f, 'c'))
            .ok_or(AuthError::BadCredentials)?;
        let nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .ok_or(AuthError::BadCredentials)?;
        if binding != BASE64.encode(&self.gs2_header) || nonce != self.nonce {
            return Err(AuthError::BadCredentials);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| AuthError::BadCredentials)?;
        if proof.len() != 32 {
            return Err(AuthError::BadCredentials);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        let matches: bool = stored_key.ct_eq(&self.credential.stored_key).into();
        if !(matches && self.known) {
            return Err(AuthError::BadCredentials);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((
            self.user,
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        ))
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

    /// A SCRAM client's side, for the tests: (client-final, expected
    /// server-final) for `password` given the server-first message.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, String) {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for part in server_first.split(',') {
            match part.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = BASE64.decode(v).unwrap(),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!(
                "v={}",
                BASE64.encode(hmac(&server_key, auth_message.as_bytes()))
            ),
        )
    }

    #[test]
    fn scram_exchange_accepts_the_right_password_only() {
        let auth =
            Authenticator::from_config(&config_with_users(&[("alice", "open sesame")])).unwrap();
        let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
        let (exchange, server_first) = auth.scram_start(format!("n,,{bare}").as_bytes()).unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        let (message, expected) = client_final("open sesame", bare, &server_first);
        let (user, server_final) = exchange.finish(message.as_bytes()).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(String::from_utf8(server_final).unwrap(), expected);
        // Wrong password.
        let (exchange, server_first) = auth.scram_start(format!("n,,{bare}").as_bytes()).unwrap();
        let (message, _) = client_final("wrong", bare, &String::from_utf8(server_first).unwrap());
        assert_eq!(
            exchange.finish(message.as_bytes()).err(),
            Some(AuthError::BadCredentials)
        );
    }

    #[test]
    fn scram_for_unknown_users_fails_late_and_looks_the_same() {
        let auth = Authenticator::from_config(&config_with_users(&[("alice", "x")])).unwrap();
        let first = |user: &str| {
            let (e, reply) = auth
                .scram_start(format!("n,,n={user},r=abc").as_bytes())
                .unwrap();
            let reply = String::from_utf8(reply).unwrap();
            let salt = reply.split(',').nth(1).unwrap().to_string();
            (e, reply, salt)
        };
        let (_, _, salt1) = first("mallory");
        let (e, reply, salt2) = first("mallory");
        assert_eq!(salt1, salt2, "a made-up salt is stable per name");
        let (message, _) = client_final("x", "n=mallory,r=abc", &reply);
        assert!(e.finish(message.as_bytes()).is_err());
    }

    #[test]
    fn scram_refuses_malformed_messages_and_channel_binding() {
        let auth = Authenticator::from_config(&config_with_users(&[("alice", "x")])).unwrap();
        for bad in [
            "",
            "n,,",
            "n,,r=abc",
            "p=tls-unique,,n=alice,r=abc",
            "n,a=bob,n=alice,r=x",
            "n,,n=al=ZZ,r=x",
        ] {
            assert!(auth.scram_start(bad.as_bytes()).is_err(), "{bad}");
        }
        let (e, _) = auth.scram_start(b"n,,n=alice,r=abc").unwrap();
        assert!(e.finish(b"c=biws,r=abc-not-ours,p=AAAA").is_err());
    }

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
