//! SASL authentication on Kafka listeners (SaslHandshake v1, then SaslAuthenticate v0-2), as
//! Kafka's clients speak it; the exchange itself is [`crate::sasl`].

use super::wire::{code, text};
use crate::sasl::{Exchange, Step as ExchangeStep};
use crate::session::Principal;
use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use oxbow_cluster::Metadata;

/// Where a connection is in authenticating.
pub(super) enum Sasl {
    /// A listener without SASL: nothing to do.
    NotRequired,
    /// Waiting for SaslHandshake.
    AwaitingHandshake,
    /// The client chose a mechanism; the exchange is under way.
    Exchanging(Exchange),
    /// Authenticated.
    Done,
}

/// What became of a SaslAuthenticate.
pub(super) enum Step {
    /// More tokens are needed.
    Continue,
    /// The client is who it says.
    Authenticated(Principal),
    /// Refused (the response says so): the connection is closed after the failure delay.
    Failed(String),
}

impl Sasl {
    /// The state of a new connection on a listener with or without SASL.
    pub(super) fn new(required: bool) -> Sasl {
        if required {
            Sasl::AwaitingHandshake
        } else {
            Sasl::NotRequired
        }
    }

    /// Whether requests other than ApiVersions and the SASL ones may be served.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Sasl::NotRequired | Sasl::Done)
    }

    /// Answers SaslHandshake; `offered` are the listener's mechanisms. `false`: close after it.
    pub(super) fn handshake(
        &mut self,
        offered: &[String],
        request: &SaslHandshakeRequest,
    ) -> (SaslHandshakeResponse, bool) {
        let mechanisms = offered.iter().map(|m| text(m)).collect();
        let mut response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        if !matches!(self, Sasl::AwaitingHandshake) {
            // On a listener without SASL, or a second handshake (Kafka answers the same).
            return (response.with_error_code(code::ILLEGAL_SASL_STATE), true);
        }
        let chosen = request.mechanism.as_str();
        if !offered.iter().any(|m| m == chosen) {
            response.error_code = code::UNSUPPORTED_SASL_MECHANISM;
            return (response, false);
        }
        match Exchange::start(chosen) {
            Ok(exchange) => *self = Sasl::Exchanging(exchange),
            Err(_) => return (response.with_error_code(code::ILLEGAL_SASL_STATE), false),
        }
        (response, true)
    }

    /// Whether the next SaslAuthenticate checks a password (see `crate::password_checks`).
    pub(super) fn checks_password(&self) -> bool {
        matches!(self, Sasl::Exchanging(exchange) if exchange.checks_password())
    }

    /// Answers SaslAuthenticate, looking users up in `metadata`.
    pub(super) fn authenticate(
        &mut self,
        metadata: &Metadata,
        request: &SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, Step) {
        let token = request.auth_bytes.as_ref();
        let exchange = match std::mem::replace(self, Sasl::AwaitingHandshake) {
            Sasl::Exchanging(exchange) => exchange,
            other => {
                *self = other;
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(code::ILLEGAL_SASL_STATE)
                    .with_error_message(Some(text("SaslAuthenticate without a handshake")));
                return (
                    response,
                    Step::Failed("SaslAuthenticate out of turn".into()),
                );
            }
        };
        match exchange.step(metadata, token) {
            ExchangeStep::Continue(next, reply) => {
                *self = Sasl::Exchanging(next);
                (answer(reply), Step::Continue)
            }
            ExchangeStep::Authenticated(principal, reply) => {
                *self = Sasl::Done;
                (answer(reply), Step::Authenticated(principal))
            }
            ExchangeStep::Failed(refusal) => {
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(code::SASL_AUTHENTICATION_FAILED)
                    .with_error_message(Some(text(&refusal.said)));
                (response, Step::Failed(refusal.logged))
            }
        }
    }
}

/// The answer to a PLAIN login the shard has no time to check (`crate::password_checks`).
pub(super) fn busy() -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code::SASL_AUTHENTICATION_FAILED)
        .with_error_message(Some(text(crate::password_checks::BUSY)))
}

fn answer(token: Vec<u8>) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbow_cluster::MetadataChange;
    use oxbow_core::auth::{Mechanism, ScramClient, ScramCredential};

    fn with_user(user: &str, mechanism: Mechanism, password: &str) -> Metadata {
        let mut metadata = Metadata::default();
        let credential = ScramCredential::generate(mechanism, password.as_bytes(), 4096).unwrap();
        let change = MetadataChange::SetScramCredential {
            user: user.into(),
            mechanism,
            credential,
        };
        metadata.apply(&change).unwrap();
        metadata
    }

    fn offered() -> Vec<String> {
        ["PLAIN", "SCRAM-SHA-512"].map(String::from).to_vec()
    }

    fn handshake(sasl: &mut Sasl, mechanism: &str) -> (i16, bool) {
        let request = SaslHandshakeRequest::default().with_mechanism(text(mechanism));
        let (response, go_on) = sasl.handshake(&offered(), &request);
        (response.error_code, go_on)
    }

    fn token(
        sasl: &mut Sasl,
        metadata: &Metadata,
        bytes: &[u8],
    ) -> (SaslAuthenticateResponse, Step) {
        let request =
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes));
        sasl.authenticate(metadata, &request)
    }

    #[test]
    fn scram_authenticates_the_user_and_refuses_a_wrong_password_or_user_alike() {
        let mechanism = Mechanism::ScramSha512;
        let metadata = with_user("alice", mechanism, "secret");
        let attempt = |user: &str, password: &str| {
            let mut sasl = Sasl::new(true);
            assert_eq!(handshake(&mut sasl, "SCRAM-SHA-512"), (code::NONE, true));
            let mut client = ScramClient::new(mechanism, user, password.as_bytes()).unwrap();
            let (first, step) = token(&mut sasl, &metadata, &client.client_first());
            // Known or not, every user gets a server-first: who exists is not told.
            assert!(
                matches!(step, Step::Continue),
                "{user}: refused at client-first"
            );
            let last = client.server_first(&first.auth_bytes).unwrap();
            let (last, step) = token(&mut sasl, &metadata, &last);
            if matches!(step, Step::Authenticated(_)) {
                client.server_final(&last.auth_bytes).unwrap();
            }
            (last, step, sasl.is_open())
        };
        let (_, step, open) = attempt("alice", "secret");
        assert!(matches!(step, Step::Authenticated(Principal::User(ref u)) if u == "alice"));
        assert!(open);
        let (wrong, _, open) = attempt("alice", "guess");
        let (unknown, _, _) = attempt("mallory", "secret");
        assert!(!open);
        for refused in [&wrong, &unknown] {
            assert_eq!(refused.error_code, code::SASL_AUTHENTICATION_FAILED);
        }
        assert_eq!(
            wrong.error_message, unknown.error_message,
            "a stranger can tell users apart"
        );
    }

    #[test]
    fn plain_is_checked_against_the_scram_credential() {
        let metadata = with_user("bob", Mechanism::ScramSha256, "pw");
        for (password, authenticated) in [("pw", true), ("nope", false)] {
            let mut sasl = Sasl::new(true);
            assert_eq!(handshake(&mut sasl, "PLAIN"), (code::NONE, true));
            let message = format!("\0bob\0{password}");
            let (response, step) = token(&mut sasl, &metadata, message.as_bytes());
            assert_eq!(matches!(step, Step::Authenticated(_)), authenticated);
            assert_eq!(response.error_code == code::NONE, authenticated);
        }
    }

    #[test]
    fn out_of_turn_and_unoffered_requests_are_refused() {
        let metadata = Metadata::default();
        let mut sasl = Sasl::new(true);
        let (response, step) = token(&mut sasl, &metadata, b"n,,n=a,r=x");
        assert_eq!(response.error_code, code::ILLEGAL_SASL_STATE);
        assert!(matches!(step, Step::Failed(_)));
        assert_eq!(
            handshake(&mut sasl, "SCRAM-SHA-256"),
            (code::UNSUPPORTED_SASL_MECHANISM, false)
        );
        // A listener without SASL answers the handshake ILLEGAL_SASL_STATE, as Kafka does.
        let mut open = Sasl::new(false);
        assert_eq!(
            handshake(&mut open, "PLAIN"),
            (code::ILLEGAL_SASL_STATE, true)
        );
        assert!(open.is_open());
        // Garbage tokens are refused, never a panic.
        let mut sasl = Sasl::new(true);
        handshake(&mut sasl, "SCRAM-SHA-512");
        let (response, _) = token(&mut sasl, &metadata, &[0xff, 0, b',']);
        assert_eq!(response.error_code, code::SASL_AUTHENTICATION_FAILED);
    }
}
