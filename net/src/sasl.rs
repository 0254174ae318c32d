//! A SASL exchange, whatever protocol carries it: PLAIN (checked against the user's SCRAM
//! credential, so no password is ever stored) and SCRAM-SHA-256/512, with users looked up in
//! the metadata. Sans-IO: the Kafka connection carries tokens in SaslAuthenticate, the native
//! one in Authenticate frames; the failure delay and the close are theirs.

use crate::session::Principal;
use oxbow_cluster::Metadata;
use oxbow_core::auth::{parse_plain, Mechanism, ScramCredential, ScramServer};

/// The name of PLAIN.
pub const PLAIN: &str = "PLAIN";

/// An exchange under way.
pub enum Exchange {
    /// PLAIN: one token.
    Plain,
    /// SCRAM: client-first, then client-final.
    Scram(Mechanism, Box<ScramServer>, ScramStep),
}

/// Which SCRAM message comes next from the client.
pub enum ScramStep {
    /// The first.
    ClientFirst,
    /// The last, from this user.
    ClientFinal {
        /// Who the client-first named.
        user: String,
    },
}

/// What one token came to.
pub enum Step {
    /// Send this token and wait for the client's next.
    Continue(Exchange, Vec<u8>),
    /// The client is who it says; send this last token.
    Authenticated(Principal, Vec<u8>),
    /// Refused.
    Failed(Refusal),
}

/// Why an authentication failed: what the client is told, and what the log says (which may
/// tell more, never a secret: no SCRAM or PLAIN error holds one).
pub struct Refusal {
    /// For the client.
    pub said: String,
    /// For the log.
    pub logged: String,
}

impl Refusal {
    /// A client error the client may as well know about (a malformed message).
    fn said(said: String) -> Refusal {
        Refusal {
            logged: said.clone(),
            said,
        }
    }

    /// A wrong user or password, in Kafka's words: the same for both, so that a stranger
    /// cannot tell which users exist.
    fn invalid(mechanism: Mechanism, why: &str) -> Refusal {
        Refusal {
            said: format!(
                "Authentication failed during authentication due to invalid credentials with \
                 SASL mechanism {}",
                mechanism.name()
            ),
            logged: format!("{}: {why}", mechanism.name()),
        }
    }
}

impl Exchange {
    /// An exchange of `mechanism` (one of the listener's, checked by the caller).
    pub fn start(mechanism: &str) -> Result<Exchange, Refusal> {
        if mechanism == PLAIN {
            return Ok(Exchange::Plain);
        }
        let mechanism: Mechanism = (mechanism.parse())
            .map_err(|e: oxbow_core::auth::UnknownMechanism| Refusal::said(e.to_string()))?;
        // Fails only when the system's random source does: nothing a client can fix.
        let server = ScramServer::new(mechanism).map_err(|e| {
            tracing::error!(error = %e, "starting a SCRAM exchange");
            Refusal::said("the broker cannot start a SCRAM exchange".into())
        })?;
        Ok(Exchange::Scram(
            mechanism,
            Box::new(server),
            ScramStep::ClientFirst,
        ))
    }

    /// Whether the next step checks a password (PLAIN: one PBKDF2), which a shard paces
    /// (`crate::password_checks`).
    pub fn checks_password(&self) -> bool {
        matches!(self, Exchange::Plain)
    }

    /// Takes the client's next token, looking users up in `metadata`.
    pub fn step(self, metadata: &Metadata, token: &[u8]) -> Step {
        let outcome = match self {
            Exchange::Plain => plain(metadata, token),
            Exchange::Scram(mechanism, mut server, ScramStep::ClientFirst) => {
                let first = match server.client_first(token) {
                    Ok(first) => first,
                    Err(e) => return Step::Failed(Refusal::said(format!("{mechanism}: {e}"))),
                };
                if first.token_auth {
                    let why = "delegation tokens are not supported".to_string();
                    return Step::Failed(Refusal::said(why));
                }
                // An unknown user goes on with a decoy and fails at the proof, as a wrong
                // password does: the exchange does not tell who exists.
                let decoy;
                let credential = match metadata.scram_credential(&first.username, mechanism) {
                    Some(credential) => credential,
                    None => {
                        decoy = ScramCredential::decoy(mechanism, &first.username);
                        &decoy
                    }
                };
                match server.server_first(credential) {
                    Ok(reply) => {
                        let step = ScramStep::ClientFinal {
                            user: first.username,
                        };
                        return Step::Continue(Exchange::Scram(mechanism, server, step), reply);
                    }
                    Err(e) => Err(Refusal::said(format!("{mechanism}: {e}"))),
                }
            }
            Exchange::Scram(mechanism, mut server, ScramStep::ClientFinal { user }) => {
                match server.client_final(token) {
                    Ok(reply) => Ok((Principal::User(user), reply)),
                    Err(e) => Err(Refusal::invalid(mechanism, &e.to_string())),
                }
            }
        };
        match outcome {
            Ok((principal, reply)) => Step::Authenticated(principal, reply),
            Err(refusal) => Step::Failed(refusal),
        }
    }
}

/// PLAIN: the password is checked against the user's SCRAM credential (SHA-512's when it has
/// both), or a decoy: always one PBKDF2, so the time taken does not tell who exists.
fn plain(metadata: &Metadata, token: &[u8]) -> Result<(Principal, Vec<u8>), Refusal> {
    let refused = || Refusal {
        said: "Authentication failed: Invalid username or password".to_string(),
        logged: format!("{PLAIN}: wrong user or password"),
    };
    let credentials = parse_plain(token).map_err(|e| Refusal::said(format!("{PLAIN}: {e}")))?;
    let user = &credentials.username;
    let known = [Mechanism::ScramSha512, Mechanism::ScramSha256]
        .into_iter()
        .find_map(|m| Some((m, metadata.scram_credential(user, m)?.clone())));
    let (mechanism, credential) = known.unwrap_or_else(|| {
        let mechanism = Mechanism::ScramSha512;
        (mechanism, ScramCredential::decoy(mechanism, user))
    });
    let verified = credential.verify_password(mechanism, &credentials.password);
    if !verified {
        return Err(refused());
    }
    Ok((Principal::User(credentials.username), Vec::new()))
}
