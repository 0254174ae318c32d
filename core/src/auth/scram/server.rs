//! The broker's side of one SCRAM exchange.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::{
    attribute, decode_saslname, extension, is_printable_nonce, message_text, random_nonce,
    ScramError,
};
use crate::auth::{crypto, Mechanism, ScramCredential};

/// What the client said in its first message that the broker needs to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientFirst {
    /// The user to authenticate, saslname-decoded: look up its credential with this.
    pub username: String,
    /// Whether the client sent `tokenauth=true`: `username` is then a delegation token id and
    /// the credential must come from the token store, not the user store.
    pub token_auth: bool,
}

/// The server side of one SCRAM authentication, owned by the connection's task.
///
/// Call order: [`client_first`](Self::client_first) with the client's first message, look up
/// the credential of [`ClientFirst::username`], [`server_first`](Self::server_first) with it,
/// then [`client_final`](Self::client_final) with the client's last message. Its `Ok` reply is
/// the server-final to send, and means the client is authenticated. Any error, including a
/// call out of order, ends the exchange: later calls return [`ScramError::OutOfOrder`].
pub struct ScramServer {
    mechanism: Mechanism,
    server_nonce: String,
    state: ServerState,
}

/// Where the exchange is. What each step learns is carried into the next, because the proof
/// covers the exact text of every message (AuthMessage).
enum ServerState {
    AwaitingClientFirst,
    AwaitingCredential(ClientFirstFacts),
    AwaitingClientFinal {
        first: ClientFirstFacts,
        server_first: String,
        credential: ScramCredential,
    },
    Complete,
    Failed,
}

impl ServerState {
    fn name(&self) -> &'static str {
        match self {
            ServerState::AwaitingClientFirst => "awaiting client-first",
            ServerState::AwaitingCredential(_) => "awaiting server_first",
            ServerState::AwaitingClientFinal { .. } => "awaiting client-final",
            ServerState::Complete => "complete",
            ServerState::Failed => "failed",
        }
    }
}

struct ClientFirstFacts {
    /// `n,,` or `n,a=...,`, exactly as received: `c=` in the client-final must encode it.
    gs2_header: String,
    /// The client-first after the GS2 header, the first part of AuthMessage.
    client_first_bare: String,
    /// Client nonce followed by the server's.
    combined_nonce: String,
    /// The client's nonce alone.
    client_nonce: String,
}

impl ScramServer {
    /// A server for one exchange, with a fresh random nonce. Fails only if the system RNG
    /// does.
    pub fn new(mechanism: Mechanism) -> Result<Self, ScramError> {
        Ok(Self::with_nonce(mechanism, &random_nonce()?))
    }

    /// A server whose nonce is `server_nonce`, for tests and test vectors. A real server must
    /// use [`new`](Self::new): a predictable nonce allows replaying a recorded exchange.
    ///
    /// # Panics
    ///
    /// If `server_nonce` is empty or not printable ASCII without ',' (a caller's bug).
    pub fn with_nonce(mechanism: Mechanism, server_nonce: &str) -> Self {
        assert!(
            is_printable_nonce(server_nonce),
            "SCRAM server nonce {server_nonce:?} must be printable ASCII without ','"
        );
        ScramServer {
            mechanism,
            server_nonce: server_nonce.to_string(),
            state: ServerState::AwaitingClientFirst,
        }
    }

    /// The mechanism this exchange uses.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether [`client_final`](Self::client_final) has accepted the client's proof.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, ServerState::Complete)
    }

    /// Step 1: parses the client-first message (`n,[a=AUTHZID],n=USER,r=CNONCE[,ext...]`).
    pub fn client_first(&mut self, message: &[u8]) -> Result<ClientFirst, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::AwaitingClientFirst = state else {
            return Err(out_of_order("client_first", &state));
        };
        let parsed = parse_client_first(message_text(message)?)?;
        self.state = ServerState::AwaitingCredential(ClientFirstFacts {
            gs2_header: parsed.gs2_header.to_string(),
            client_first_bare: parsed.client_first_bare.to_string(),
            combined_nonce: format!("{}{}", parsed.client_nonce, self.server_nonce),
            client_nonce: parsed.client_nonce.to_string(),
        });
        Ok(ClientFirst {
            username: parsed.username,
            token_auth: parsed.token_auth,
        })
    }

    /// Step 2: the server-first message (`r=CNONCE+SNONCE,s=SALT,i=ITERATIONS`) for the user's
    /// credential.
    pub fn server_first(&mut self, credential: &ScramCredential) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::AwaitingCredential(first) = state else {
            return Err(out_of_order("server_first", &state));
        };
        let server_first = format!(
            "r={},s={},i={}",
            first.combined_nonce,
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.clone().into_bytes();
        self.state = ServerState::AwaitingClientFinal {
            first,
            server_first,
            credential: credential.clone(),
        };
        Ok(message)
    }

    /// Step 3: checks the client-final message (`c=GS2,r=NONCE[,ext...],p=PROOF`) and, if the
    /// proof is right, returns the server-final (`v=SERVER_SIGNATURE`).
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::AwaitingClientFinal {
            first,
            server_first,
            credential,
        } = state
        else {
            return Err(out_of_order("client_final", &state));
        };
        let parsed = parse_client_final(message_text(message)?)?;
        if parsed.channel_binding != BASE64.encode(&first.gs2_header) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        // librdkafka before 2.6.1 (Debian 12's kcat among them) sends its own nonce once more
        // in front of the combined one (librdkafka#4895), which Kafka 3.8.1-3.9 accept. Exactly
        // that form is accepted too: the server's random part is still in it, so a recorded
        // exchange cannot be replayed against a new server nonce.
        let doubled = parsed.nonce.strip_prefix(first.client_nonce.as_str());
        if parsed.nonce != first.combined_nonce && doubled != Some(&first.combined_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let mechanism = self.mechanism;
        let auth_message = format!(
            "{},{},{}",
            first.client_first_bare, server_first, parsed.without_proof
        );
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the client knew the
        // password iff H(ClientKey) is StoredKey.
        let client_signature =
            crypto::hmac(mechanism, &credential.stored_key, auth_message.as_bytes());
        if parsed.proof.len() != client_signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key = crypto::xor(&parsed.proof, &client_signature);
        let stored_key = crypto::hash(mechanism, &client_key);
        if !crypto::secrets_equal(&stored_key, &credential.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature =
            crypto::hmac(mechanism, &credential.server_key, auth_message.as_bytes());
        self.state = ServerState::Complete;
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

impl std::fmt::Debug for ScramServer {
    /// Shows where the exchange is, never the credential it holds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

fn out_of_order(step: &'static str, state: &ServerState) -> ScramError {
    ScramError::OutOfOrder {
        step,
        state: state.name(),
    }
}

struct ParsedClientFirst<'a> {
    gs2_header: &'a str,
    client_first_bare: &'a str,
    username: String,
    client_nonce: &'a str,
    token_auth: bool,
}

fn parse_client_first(text: &str) -> Result<ParsedClientFirst<'_>, ScramError> {
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        // `y`: the client could bind but believes we cannot, which is true.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ => return Err(ScramError::Malformed("GS2 flag is not n, y or p=")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("GS2 header has no authzid field"))?;
    let gs2_header = &text[..text.len() - bare.len()];
    let authzid = match authzid {
        "" => None,
        field => Some(decode_saslname(attribute(
            field,
            "a",
            "GS2 authzid is not a=",
        )?)?),
    };

    let mut parts = bare.split(',');
    let first = parts.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(ScramError::MandatoryExtension);
    }
    let username = decode_saslname(attribute(first, "n", "expected n=username")?)?;
    let nonce_part = parts.next().ok_or(ScramError::Malformed("no r= nonce"))?;
    let client_nonce = attribute(nonce_part, "r", "expected r=nonce after n=")?;
    if !is_printable_nonce(client_nonce) {
        return Err(ScramError::Malformed("client nonce is not printable ASCII"));
    }
    let mut token_auth = false;
    for part in parts {
        let (key, value) = extension(part)?;
        if key == "tokenauth" {
            // Kafka reads it with Java's Boolean.parseBoolean: "true" in any case.
            token_auth = value.eq_ignore_ascii_case("true");
        }
    }
    if authzid.is_some_and(|authzid| authzid != username) {
        return Err(ScramError::AuthzidMismatch);
    }
    Ok(ParsedClientFirst {
        gs2_header,
        client_first_bare: bare,
        username,
        client_nonce,
        token_auth,
    })
}

struct ParsedClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    /// Everything before `,p=`: the last part of AuthMessage.
    without_proof: &'a str,
    proof: Vec<u8>,
}

fn parse_client_final(text: &str) -> Result<ParsedClientFinal<'_>, ScramError> {
    let (without_proof, proof) = text
        .rsplit_once(',')
        .ok_or(ScramError::Malformed("no p= proof"))?;
    let proof = attribute(proof, "p", "expected p=proof last")?;
    let mut parts = without_proof.split(',');
    let channel_binding = attribute(
        parts.next().unwrap_or_default(),
        "c",
        "expected c=channel binding first",
    )?;
    let nonce_part = parts.next().ok_or(ScramError::Malformed("no r= nonce"))?;
    let nonce = attribute(nonce_part, "r", "expected r=nonce after c=")?;
    for part in parts {
        extension(part)?;
    }
    let proof = BASE64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("proof is not base64"))?;
    Ok(ParsedClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}
