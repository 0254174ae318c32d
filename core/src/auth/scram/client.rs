//! The client's side of one SCRAM exchange (for tests now, and for Oxbow's Rust client).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::{
    attribute, encode_saslname, extension, is_printable_nonce, message_text, random_nonce,
    ScramError,
};
use crate::auth::{crypto, validate_iterations, Mechanism};

/// The GS2 header the client sends: no channel binding, no authzid (as Kafka's clients do).
const GS2_HEADER: &str = "n,,";

/// The client side of one SCRAM authentication.
///
/// Call order: send [`client_first`](Self::client_first), pass the server's reply to
/// [`server_first`](Self::server_first) and send what it returns, then pass the server's last
/// message to [`server_final`](Self::server_final); its `Ok` means the server proved it holds
/// the credential. Any error ends the exchange: later calls return
/// [`ScramError::OutOfOrder`]. `Debug` never prints the password.
pub struct ScramClient {
    mechanism: Mechanism,
    username: String,
    password: Vec<u8>,
    client_nonce: String,
    state: ClientState,
}

enum ClientState {
    AwaitingServerFirst,
    /// Holds the signature the server must send back, computed with the proof.
    AwaitingServerFinal {
        server_signature: Vec<u8>,
    },
    Complete,
    Failed,
}

impl ClientState {
    fn name(&self) -> &'static str {
        match self {
            ClientState::AwaitingServerFirst => "awaiting server-first",
            ClientState::AwaitingServerFinal { .. } => "awaiting server-final",
            ClientState::Complete => "complete",
            ClientState::Failed => "failed",
        }
    }
}

impl ScramClient {
    /// A client for one exchange, with a fresh random nonce. Fails only if the system RNG
    /// does.
    pub fn new(mechanism: Mechanism, username: &str, password: &[u8]) -> Result<Self, ScramError> {
        Ok(Self::with_nonce(
            mechanism,
            username,
            password,
            &random_nonce()?,
        ))
    }

    /// A client whose nonce is `client_nonce`, for tests and test vectors.
    ///
    /// # Panics
    ///
    /// If `client_nonce` is empty or not printable ASCII without ',' (a caller's bug).
    pub fn with_nonce(
        mechanism: Mechanism,
        username: &str,
        password: &[u8],
        client_nonce: &str,
    ) -> Self {
        assert!(
            is_printable_nonce(client_nonce),
            "SCRAM client nonce {client_nonce:?} must be printable ASCII without ','"
        );
        ScramClient {
            mechanism,
            username: username.to_string(),
            password: password.to_vec(),
            client_nonce: client_nonce.to_string(),
            state: ClientState::AwaitingServerFirst,
        }
    }

    /// The client-first message, `n,,n=USER,r=CNONCE`. It depends only on the username and
    /// nonce, so it may be asked for at any time.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!(
            "n={},r={}",
            encode_saslname(&self.username),
            self.client_nonce
        )
    }

    /// Reads the server-first message and returns the client-final message with the proof.
    /// Refuses a nonce that does not extend ours and an iteration count outside
    /// [`ITERATIONS_MIN`](crate::auth::ITERATIONS_MIN) to
    /// [`ITERATIONS_MAX`](crate::auth::ITERATIONS_MAX): too few is weak, too many lets a
    /// server make us burn CPU.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let ClientState::AwaitingServerFirst = state else {
            return Err(out_of_order("server_first", &state));
        };
        let server_first = message_text(message)?;
        let parsed = parse_server_first(server_first)?;
        let extends_ours = parsed.nonce.len() > self.client_nonce.len()
            && parsed.nonce.starts_with(&self.client_nonce);
        if !extends_ours {
            return Err(ScramError::InvalidServerNonce);
        }
        let iterations = parsed.iterations;
        let rounds = validate_iterations(iterations)
            .map_err(|_| ScramError::IterationsOutOfRange { iterations })?;

        let mechanism = self.mechanism;
        let salted = crypto::salted_password(mechanism, &self.password, &parsed.salt, rounds);
        let client_key = crypto::client_key(mechanism, &salted);
        let stored_key = crypto::hash(mechanism, &client_key);
        let without_proof = format!("c={},r={}", BASE64.encode(GS2_HEADER), parsed.nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare(),
            server_first,
            without_proof
        );
        let client_signature = crypto::hmac(mechanism, &stored_key, auth_message.as_bytes());
        let proof = crypto::xor(&client_key, &client_signature);
        let server_key = crypto::server_key(mechanism, &salted);
        self.state = ClientState::AwaitingServerFinal {
            server_signature: crypto::hmac(mechanism, &server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Reads the server-final message: `Ok` if its signature (`v=`) is the one only a holder of
    /// the credential can compute; the server's reason if it sent `e=`.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), ScramError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let ClientState::AwaitingServerFinal { server_signature } = state else {
            return Err(out_of_order("server_final", &state));
        };
        let text = message_text(message)?;
        let mut parts = text.split(',');
        let first = parts.next().unwrap_or_default();
        if let Some(reason) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(reason.to_string()));
        }
        let verifier = attribute(first, "v", "expected v=signature or e=error")?;
        for part in parts {
            extension(part)?;
        }
        let received = BASE64
            .decode(verifier)
            .map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        if !crypto::secrets_equal(&received, &server_signature) {
            return Err(ScramError::InvalidServerSignature);
        }
        self.state = ClientState::Complete;
        Ok(())
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

fn out_of_order(step: &'static str, state: &ClientState) -> ScramError {
    ScramError::OutOfOrder {
        step,
        state: state.name(),
    }
}

struct ParsedServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

fn parse_server_first(text: &str) -> Result<ParsedServerFirst<'_>, ScramError> {
    let mut parts = text.split(',');
    let first = parts.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(ScramError::MandatoryExtension);
    }
    let nonce = attribute(first, "r", "expected r=nonce first")?;
    if !is_printable_nonce(nonce) {
        return Err(ScramError::Malformed("server nonce is not printable ASCII"));
    }
    let salt_part = parts.next().ok_or(ScramError::Malformed("no s= salt"))?;
    let salt = attribute(salt_part, "s", "expected s=salt after r=")?;
    let salt = BASE64
        .decode(salt)
        .map_err(|_| ScramError::Malformed("salt is not base64"))?;
    if salt.is_empty() {
        return Err(ScramError::Malformed("salt is empty"));
    }
    let iterations_part = parts.next().ok_or(ScramError::Malformed("no i= count"))?;
    let digits = attribute(iterations_part, "i", "expected i=iterations after s=")?;
    // `parse` alone would also take a leading '+'.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScramError::Malformed("iteration count is not a number"));
    }
    let iterations = digits
        .parse()
        .map_err(|_| ScramError::Malformed("iteration count does not fit in 32 bits"))?;
    for part in parts {
        extension(part)?;
    }
    Ok(ParsedServerFirst {
        nonce,
        salt,
        iterations,
    })
}
