//! SASL authentication on a native connection, sans-IO: which mechanism, whose credentials,
//! and the client's side of the exchange. The connection's handshake (`handshake.rs`) does the
//! I/O: it sends [`SaslExchange::start`]'s token in an `Authenticate` frame, hands every
//! `AuthenticationStep` to [`SaslExchange::step`] and sends what that returns, until it says
//! [`Step::Done`].
//!
//! ```text
//! SCRAM-SHA-256/512                              PLAIN
//! Authenticate(client-first)      --->           Authenticate(\0user\0password)  --->
//! AuthenticationStep(server-first) <---          AuthenticationStep(done)        <---
//! Authenticate(client-final)      --->
//! AuthenticationStep(server-final, done) <---    (verified before the connection is used)
//! ```

use crate::error::ClientError;
use oxbow_core::auth::{Mechanism, ScramClient, PLAIN_FIELD_BYTES_MAX};
use std::fmt;

/// A SASL mechanism the client can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `SCRAM-SHA-256` (RFC 7677): the password never crosses the wire and the broker proves
    /// it holds the credential.
    ScramSha256,
    /// `SCRAM-SHA-512`: as SCRAM-SHA-256, with SHA-512.
    ScramSha512,
    /// `PLAIN` (RFC 4616): the password is sent as is, so use it only over TLS.
    Plain,
}

impl SaslMechanism {
    /// Every mechanism, by name.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
        SaslMechanism::Plain,
    ];

    /// The mechanism's name on the wire and in configuration (`SCRAM-SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => Mechanism::ScramSha256.name(),
            SaslMechanism::ScramSha512 => Mechanism::ScramSha512.name(),
            SaslMechanism::Plain => "PLAIN",
        }
    }

    fn scram(self) -> Option<Mechanism> {
        match self {
            SaslMechanism::ScramSha256 => Some(Mechanism::ScramSha256),
            SaslMechanism::ScramSha512 => Some(Mechanism::ScramSha512),
            SaslMechanism::Plain => None,
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = ClientError;

    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN` (case-sensitive, as Kafka's names).
    fn from_str(name: &str) -> Result<SaslMechanism, ClientError> {
        SaslMechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
            .ok_or_else(|| {
                ClientError::Config(format!(
                    "SASL mechanism {name:?}: expected SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
                ))
            })
    }
}

/// A mechanism with the username and password it authenticates. `Debug` never prints the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub(crate) mechanism: SaslMechanism,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl SaslCredentials {
    /// The credentials `username` authenticates with under `mechanism`.
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> SaslCredentials {
        SaslCredentials {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }

    /// The mechanism they are for.
    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// Checks what the broker would refuse anyway, so the mistake is reported locally: an
    /// empty or over-long username or password, or a NUL (the PLAIN message separator).
    /// Messages name the field, never its contents.
    pub fn validate(&self) -> Result<(), ClientError> {
        for (field, value) in [("username", &self.username), ("password", &self.password)] {
            if value.is_empty() {
                return Err(ClientError::Config(format!("SASL {field} is empty")));
            }
            if value.len() > PLAIN_FIELD_BYTES_MAX {
                return Err(ClientError::Config(format!(
                    "SASL {field} is longer than {PLAIN_FIELD_BYTES_MAX} bytes"
                )));
            }
            if value.contains('\0') {
                return Err(ClientError::Config(format!("SASL {field} contains NUL")));
            }
        }
        Ok(())
    }
}

/// What to do after a broker's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this token in the next `Authenticate`.
    Send(Vec<u8>),
    /// Authenticated (and, with SCRAM, the broker proved it holds the credential).
    Done,
}

/// The client's side of one authentication. Call [`start`](Self::start) once, then
/// [`step`](Self::step) with each broker answer until it returns [`Step::Done`]; any error
/// ends the exchange. At most two broker answers are accepted (SCRAM), one for PLAIN.
///
/// Nothing in it is tied to the native protocol: the `oxbow` CLI runs the same exchange over
/// Kafka's SaslAuthenticate, whose answers carry no "done" flag; there the client knows by
/// [`awaits_last_answer`](Self::awaits_last_answer).
pub struct SaslExchange {
    mechanism: SaslMechanism,
    state: State,
}

enum State {
    /// SCRAM, awaiting the server-first (`false`) or the server-final (`true`).
    Scram {
        client: ScramClient,
        sent_final: bool,
    },
    /// PLAIN, awaiting the broker's verdict.
    Plain,
    /// Done or failed: nothing more is accepted.
    Over,
}

impl SaslExchange {
    /// Begins an exchange: the exchange and the first token to send.
    pub fn start(credentials: &SaslCredentials) -> Result<(SaslExchange, Vec<u8>), ClientError> {
        credentials.validate()?;
        let mechanism = credentials.mechanism;
        let (state, token) = match mechanism.scram() {
            Some(scram) => {
                let client = ScramClient::new(
                    scram,
                    &credentials.username,
                    credentials.password.as_bytes(),
                )
                .map_err(|e| ClientError::Authentication(e.to_string()))?;
                let first = client.client_first();
                let state = State::Scram {
                    client,
                    sent_final: false,
                };
                (state, first)
            }
            None => {
                let mut token =
                    Vec::with_capacity(2 + credentials.username.len() + credentials.password.len());
                token.push(0);
                token.extend_from_slice(credentials.username.as_bytes());
                token.push(0);
                token.extend_from_slice(credentials.password.as_bytes());
                (State::Plain, token)
            }
        };
        Ok((SaslExchange { mechanism, state }, token))
    }

    /// The mechanism's name, sent in every `Authenticate`.
    pub fn mechanism(&self) -> SaslMechanism {
        self.mechanism
    }

    /// Whether the broker's next answer ends the exchange when it succeeds: PLAIN's only
    /// answer, or SCRAM's server-final.
    pub fn awaits_last_answer(&self) -> bool {
        matches!(
            self.state,
            State::Plain
                | State::Scram {
                    sent_final: true,
                    ..
                }
        )
    }

    /// Takes the broker's answer (`token`, and whether it considers the client authenticated).
    /// Fails when the broker's message is wrong (a SCRAM server signature that does not
    /// verify, a malformed message) or comes out of turn (done too early or too late).
    pub fn step(&mut self, token: &[u8], done: bool) -> Result<Step, ClientError> {
        let fail = |reason: String| Err(ClientError::Authentication(reason));
        match std::mem::replace(&mut self.state, State::Over) {
            State::Scram {
                mut client,
                sent_final: false,
            } => {
                if done {
                    return fail(format!(
                        "the broker ended {} before proving it holds the credential",
                        self.mechanism
                    ));
                }
                let client_final = client
                    .server_first(token)
                    .map_err(|e| ClientError::Authentication(e.to_string()))?;
                self.state = State::Scram {
                    client,
                    sent_final: true,
                };
                Ok(Step::Send(client_final))
            }
            State::Scram {
                mut client,
                sent_final: true,
            } => {
                if !done {
                    return fail(format!(
                        "the broker asked for more than {}'s two steps",
                        self.mechanism
                    ));
                }
                client
                    .server_final(token)
                    .map_err(|e| ClientError::Authentication(e.to_string()))?;
                Ok(Step::Done)
            }
            State::Plain if done => Ok(Step::Done),
            State::Plain => fail("the broker asked for more than PLAIN's one step".into()),
            State::Over => fail("the broker answered after the exchange was over".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_core::auth::{ScramCredential, ScramServer};

    fn credentials(mechanism: SaslMechanism, password: &str) -> SaslCredentials {
        SaslCredentials {
            mechanism,
            username: "alice".into(),
            password: password.into(),
        }
    }

    /// Runs a SCRAM exchange against core's server holding the credential of "secret".
    fn scram_against(mechanism: Mechanism, client_password: &str) -> Result<Step, ClientError> {
        let credential = ScramCredential::generate(mechanism, b"secret", 4096).unwrap();
        let sasl = match mechanism {
            Mechanism::ScramSha256 => SaslMechanism::ScramSha256,
            Mechanism::ScramSha512 => SaslMechanism::ScramSha512,
        };
        let (mut exchange, first) =
            SaslExchange::start(&credentials(sasl, client_password)).unwrap();
        assert_eq!(exchange.mechanism(), sasl);
        let mut server = ScramServer::new(mechanism).unwrap();
        assert_eq!(server.client_first(&first).unwrap().username, "alice");
        let server_first = server.server_first(&credential).unwrap();
        let Step::Send(client_final) = exchange.step(&server_first, false)? else {
            panic!("SCRAM needs a client-final");
        };
        match server.client_final(&client_final) {
            Ok(server_final) => exchange.step(&server_final, true),
            // The broker answers a wrong proof with an AuthenticationFailed error frame.
            Err(e) => Err(ClientError::Authentication(e.to_string())),
        }
    }

    #[test]
    fn scram_exchanges_complete_and_verify_the_broker() {
        for mechanism in Mechanism::ALL {
            assert_eq!(scram_against(mechanism, "secret").unwrap(), Step::Done);
            let wrong = scram_against(mechanism, "guess").unwrap_err();
            assert!(matches!(wrong, ClientError::Authentication(_)), "{wrong}");
        }
    }

    #[test]
    fn a_forged_server_final_is_refused() {
        let credential =
            ScramCredential::generate(Mechanism::ScramSha256, b"secret", 4096).unwrap();
        let (mut exchange, first) =
            SaslExchange::start(&credentials(SaslMechanism::ScramSha256, "secret")).unwrap();
        let mut server = ScramServer::new(Mechanism::ScramSha256).unwrap();
        server.client_first(&first).unwrap();
        let server_first = server.server_first(&credential).unwrap();
        let Step::Send(client_final) = exchange.step(&server_first, false).unwrap() else {
            panic!("SCRAM needs a client-final");
        };
        let genuine = server.client_final(&client_final).unwrap();
        // Same length, other signature: what a broker without the credential could send.
        let forged: Vec<u8> = (genuine.iter().enumerate())
            .map(|(i, &b)| {
                if i == 2 && b != b'A' {
                    b'A'
                } else if i == 2 {
                    b'B'
                } else {
                    b
                }
            })
            .collect();
        let error = exchange.step(&forged, true).unwrap_err();
        assert!(error.to_string().contains("signature"), "{error}");
    }

    #[test]
    fn out_of_turn_answers_are_refused() {
        let scram = credentials(SaslMechanism::ScramSha512, "secret");
        let (mut exchange, _) = SaslExchange::start(&scram).unwrap();
        let early = exchange.step(b"", true).unwrap_err();
        assert!(early.to_string().contains("before proving"), "{early}");
        assert!(exchange.step(b"", true).is_err(), "over after an error");

        let (mut plain, token) =
            SaslExchange::start(&credentials(SaslMechanism::Plain, "secret")).unwrap();
        assert_eq!(token, b"\0alice\0secret");
        assert!(plain.step(b"", false).is_err());
        let (mut plain, _) =
            SaslExchange::start(&credentials(SaslMechanism::Plain, "secret")).unwrap();
        assert_eq!(plain.step(b"", true).unwrap(), Step::Done);
        assert!(plain.step(b"", true).is_err());
    }

    #[test]
    fn garbage_from_the_broker_is_an_error_not_a_panic() {
        for token in [
            &b"\xff\xfe"[..],
            b"",
            b"r=,s=,i=",
            b"e=nope",
            &[b'a'; 10_000],
        ] {
            let (mut exchange, _) =
                SaslExchange::start(&credentials(SaslMechanism::ScramSha256, "secret")).unwrap();
            assert!(exchange.step(token, false).is_err(), "{token:?}");
        }
    }

    #[test]
    fn credentials_are_checked_and_never_printed() {
        let good = credentials(SaslMechanism::Plain, "hunter2");
        assert!(good.validate().is_ok());
        assert!(!format!("{good:?}").contains("hunter2"));
        for (username, password) in [("", "x"), ("x", ""), ("a\0b", "x"), ("x", "p\0w")] {
            let bad = SaslCredentials {
                mechanism: SaslMechanism::Plain,
                username: username.into(),
                password: password.into(),
            };
            let error = bad.validate().unwrap_err().to_string();
            assert!(!error.contains("p\0w"), "{error}");
        }
        let long = credentials(SaslMechanism::Plain, &"x".repeat(PLAIN_FIELD_BYTES_MAX + 1));
        assert!(long.validate().is_err());
    }

    #[test]
    fn mechanism_names_round_trip() {
        for mechanism in SaslMechanism::ALL {
            assert_eq!(
                mechanism.name().parse::<SaslMechanism>().unwrap(),
                mechanism
            );
        }
        for name in ["scram-sha-256", "SCRAM-SHA-1", "GSSAPI", ""] {
            assert!(name.parse::<SaslMechanism>().is_err(), "{name:?}");
        }
    }
}
