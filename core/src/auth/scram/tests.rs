use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use proptest::prelude::*;

use super::*;
use crate::auth::{Mechanism, ScramCredential};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1024)
}

// RFC 7677 section 3.
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_credential() -> ScramCredential {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    ScramCredential::from_password(Mechanism::ScramSha256, b"pencil", &salt, 4096).unwrap()
}

/// One credential per mechanism for the password "pencil", derived once: PBKDF2 is the slow
/// part of every test here.
fn pencil(mechanism: Mechanism) -> &'static ScramCredential {
    static CREDENTIALS: OnceLock<[ScramCredential; 2]> = OnceLock::new();
    let all = CREDENTIALS.get_or_init(|| {
        Mechanism::ALL.map(|m| ScramCredential::generate(m, b"pencil", 4096).unwrap())
    });
    &all[mechanism as usize]
}

/// A server that has sent its server-first to `client`, and the client-final that answers it.
fn until_client_final(mechanism: Mechanism, password: &[u8]) -> (ScramServer, String) {
    let mut client = ScramClient::new(mechanism, "user", password).unwrap();
    let mut server = ScramServer::new(mechanism).unwrap();
    server.client_first(&client.client_first()).unwrap();
    let server_first = server.server_first(pencil(mechanism)).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    (server, String::from_utf8(client_final).unwrap())
}

#[test]
fn rfc7677_vector_server_side() {
    let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, RFC_SERVER_NONCE);
    let first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(first.username, "user");
    assert!(!first.token_auth);
    let server_first = server.server_first(&rfc_credential()).unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
    let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
    assert!(server.is_complete());
}

#[test]
fn rfc7677_vector_client_side() {
    let mut client =
        ScramClient::with_nonce(Mechanism::ScramSha256, "user", b"pencil", RFC_CLIENT_NONCE);
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let client_final = client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    client.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
}

#[test]
fn round_trip_for_both_mechanisms() {
    for mechanism in Mechanism::ALL {
        let mut client = ScramClient::new(mechanism, "us,er=", b"pencil").unwrap();
        let mut server = ScramServer::new(mechanism).unwrap();
        let first = server.client_first(&client.client_first()).unwrap();
        assert_eq!(first.username, "us,er=");
        let server_first = server.server_first(pencil(mechanism)).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        let server_final = server.client_final(&client_final).unwrap();
        client.server_final(&server_final).unwrap();
        assert!(server.is_complete());
    }
}

#[test]
fn wrong_password_fails_at_client_final() {
    for mechanism in Mechanism::ALL {
        let (mut server, client_final) = until_client_final(mechanism, b"pencil!");
        let error = server.client_final(client_final.as_bytes()).unwrap_err();
        assert_eq!(error, ScramError::InvalidProof);
        assert!(!server.is_complete());
    }
}

#[test]
fn tampered_client_final_fails() {
    let mechanism = Mechanism::ScramSha512;
    let (mut server, client_final) = until_client_final(mechanism, b"pencil");
    let tampered = client_final.replacen(",p=", "x,p=", 1);
    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(ScramError::NonceMismatch)
    );

    let (mut server, client_final) = until_client_final(mechanism, b"pencil");
    let tampered = client_final.replacen("c=biws", "c=eSws", 1);
    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(ScramError::ChannelBindingMismatch)
    );

    let (mut server, client_final) = until_client_final(mechanism, b"pencil");
    let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
    let mut proof = BASE64.decode(proof).unwrap();
    proof[0] ^= 1;
    let tampered = format!("{without_proof},p={}", BASE64.encode(proof));
    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(ScramError::InvalidProof)
    );
}

#[test]
fn extensions_before_the_proof_are_covered_by_it() {
    // An extension the client did not sign changes AuthMessage, so the proof fails.
    let (mut server, client_final) = until_client_final(Mechanism::ScramSha256, b"pencil");
    let with_extension = client_final.replacen(",p=", ",x=1,p=", 1);
    assert_eq!(
        server.client_final(with_extension.as_bytes()),
        Err(ScramError::InvalidProof)
    );
}

#[test]
fn calls_out_of_order_are_errors() {
    let mechanism = Mechanism::ScramSha256;
    let mut server = ScramServer::new(mechanism).unwrap();
    assert!(matches!(
        server.server_first(pencil(mechanism)),
        Err(ScramError::OutOfOrder {
            step: "server_first",
            ..
        })
    ));
    // The failed call ended the exchange.
    assert!(matches!(
        server.client_first(RFC_CLIENT_FIRST.as_bytes()),
        Err(ScramError::OutOfOrder {
            state: "failed",
            ..
        })
    ));

    let mut server = ScramServer::new(mechanism).unwrap();
    assert!(matches!(
        server.client_final(RFC_CLIENT_FINAL.as_bytes()),
        Err(ScramError::OutOfOrder { .. })
    ));

    let mut server = ScramServer::new(mechanism).unwrap();
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    assert!(matches!(
        server.client_first(RFC_CLIENT_FIRST.as_bytes()),
        Err(ScramError::OutOfOrder { .. })
    ));

    let mut client = ScramClient::new(mechanism, "user", b"pencil").unwrap();
    assert!(matches!(
        client.server_final(RFC_SERVER_FINAL.as_bytes()),
        Err(ScramError::OutOfOrder {
            step: "server_final",
            ..
        })
    ));
    assert!(matches!(
        client.server_first(RFC_SERVER_FIRST.as_bytes()),
        Err(ScramError::OutOfOrder { .. })
    ));
}

#[test]
fn client_first_grammar() {
    let parse = |message: &str| {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "snonce");
        server.client_first(message.as_bytes())
    };
    assert_eq!(parse("y,,n=user,r=abc").unwrap().username, "user");
    assert_eq!(parse("n,a=user,n=user,r=abc").unwrap().username, "user");
    assert!(parse("n,,n=user,r=abc,tokenauth=true").unwrap().token_auth);
    assert!(parse("n,,n=user,r=abc,tokenauth=TRUE").unwrap().token_auth);
    assert!(!parse("n,,n=user,r=abc,tokenauth=false").unwrap().token_auth);

    let refused: [(&str, ScramError); 11] = [
        (
            "p=tls-unique,,n=user,r=abc",
            ScramError::ChannelBindingUnsupported,
        ),
        ("n,a=admin,n=user,r=abc", ScramError::AuthzidMismatch),
        ("n,,m=ext,n=user,r=abc", ScramError::MandatoryExtension),
        (
            "n,,n=us=2Xer,r=abc",
            ScramError::InvalidSaslName("'=' not followed by 2C or 3D"),
        ),
        (
            "n,,n=user=,r=abc",
            ScramError::InvalidSaslName("'=' not followed by 2C or 3D"),
        ),
        ("n,,n=,r=abc", ScramError::InvalidSaslName("empty name")),
        ("n,,n=user", ScramError::Malformed("no r= nonce")),
        (
            "n,,n=user,r=",
            ScramError::Malformed("client nonce is not printable ASCII"),
        ),
        (
            "x,,n=user,r=abc",
            ScramError::Malformed("GS2 flag is not n, y or p="),
        ),
        (
            "n,,n=user,r=abc,=1",
            ScramError::Malformed("extension name is not letters"),
        ),
        ("", ScramError::Malformed("no GS2 header")),
    ];
    for (message, expected) in refused {
        assert_eq!(parse(message), Err(expected), "{message:?}");
    }
    assert_eq!(
        parse("n,,n=\u{0}x,r=a").unwrap_err(),
        ScramError::InvalidSaslName("NUL in name")
    );
}

#[test]
fn channel_binding_must_encode_the_header_received() {
    // The client-first carried an authzid, so `c=biws` ("n,,") is not its header.
    let mechanism = Mechanism::ScramSha256;
    let mut server = ScramServer::with_nonce(mechanism, RFC_SERVER_NONCE);
    server
        .client_first(b"n,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    server.server_first(&rfc_credential()).unwrap();
    assert_eq!(
        server.client_final(RFC_CLIENT_FINAL.as_bytes()),
        Err(ScramError::ChannelBindingMismatch)
    );
}

#[test]
fn client_refuses_bad_server_first() {
    let refused: [(&str, ScramError); 6] = [
        (
            "r=someoneelse,s=c2FsdA==,i=4096",
            ScramError::InvalidServerNonce,
        ),
        ("r=cnonce,s=c2FsdA==,i=4096", ScramError::InvalidServerNonce),
        (
            "r=cnonceX,s=c2FsdA==,i=4095",
            ScramError::IterationsOutOfRange { iterations: 4095 },
        ),
        (
            "r=cnonceX,s=c2FsdA==,i=16385",
            ScramError::IterationsOutOfRange { iterations: 16385 },
        ),
        (
            "r=cnonceX,s=c2FsdA==,i=+4096",
            ScramError::Malformed("iteration count is not a number"),
        ),
        (
            "m=x,r=cnonceX,s=c2FsdA==,i=4096",
            ScramError::MandatoryExtension,
        ),
    ];
    for (message, expected) in refused {
        let mut client = ScramClient::with_nonce(Mechanism::ScramSha256, "u", b"p", "cnonce");
        assert_eq!(
            client.server_first(message.as_bytes()),
            Err(expected),
            "{message:?}"
        );
    }
}

#[test]
fn client_checks_the_server_final() {
    let new_client = || {
        let mut client =
            ScramClient::with_nonce(Mechanism::ScramSha256, "user", b"pencil", RFC_CLIENT_NONCE);
        client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        client
    };
    let forged = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(
        new_client().server_final(forged.as_bytes()),
        Err(ScramError::InvalidServerSignature)
    );
    assert_eq!(
        new_client().server_final(b"e=invalid-proof"),
        Err(ScramError::ServerError("invalid-proof".to_string()))
    );
    assert!(matches!(
        new_client().server_final(b"x=1"),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let (mut server, client_final) = until_client_final(Mechanism::ScramSha256, b"pencil!");
    let proof = client_final.rsplit_once(",p=").unwrap().1.to_string();
    let error = server
        .client_final(client_final.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(!error.contains(&proof), "{error}");

    let client = ScramClient::new(Mechanism::ScramSha256, "user", b"hunter2").unwrap();
    let debug = format!("{client:?} {server:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("104, 117"),
        "{debug}"
    );
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Arbitrary bytes, or arbitrary bytes after a prefix that gets a parser past its first checks.
fn tail_after(prefix: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(300),
        bytes(300).prop_map(move |tail| [prefix.as_bytes(), &tail].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn client_first_never_panics(message in tail_after("n,,n=user,r=abc".to_string())) {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "snonce");
        let _ = server.client_first(&message);
    }

    #[test]
    fn client_final_never_panics(
        message in tail_after("c=biws,r=cnoncesnonce".to_string()),
        mechanism in 0usize..2,
    ) {
        let mechanism = Mechanism::ALL[mechanism];
        let mut server = ScramServer::with_nonce(mechanism, "snonce");
        server.client_first(b"n,,n=user,r=cnonce").unwrap();
        server.server_first(pencil(mechanism)).unwrap();
        prop_assert!(server.client_final(&message).is_err());
    }

    #[test]
    fn server_first_never_panics(message in tail_after("r=cnonceX,s=c2FsdA==,i=".to_string())) {
        let mut client = ScramClient::with_nonce(Mechanism::ScramSha256, "u", b"p", "cnonce");
        let _ = client.server_first(&message);
    }

    #[test]
    fn server_final_never_panics(message in tail_after("v=".to_string())) {
        let mut client =
            ScramClient::with_nonce(Mechanism::ScramSha256, "user", b"pencil", RFC_CLIENT_NONCE);
        client.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        prop_assert!(client.server_final(&message).is_err());
    }
}

/// The client-final of librdkafka before 2.6.1 for `nonce`, with a correct proof for "pencil"
/// against the RFC 7677 exchange.
fn rfc_client_final_with_nonce(server_first: &str, nonce: &str) -> String {
    use crate::auth::crypto;
    let mechanism = Mechanism::ScramSha256;
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("n=user,r={RFC_CLIENT_NONCE},{server_first},{without_proof}");
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let iterations = std::num::NonZeroU32::new(4096).unwrap();
    let salted = crypto::salted_password(mechanism, b"pencil", &salt, iterations);
    let client_key = crypto::client_key(mechanism, &salted);
    let stored_key = crypto::hash(mechanism, &client_key);
    let signature = crypto::hmac(mechanism, &stored_key, auth.as_bytes());
    let proof = crypto::xor(&client_key, &signature);
    format!("{without_proof},p={}", BASE64.encode(proof))
}

#[test]
fn the_doubled_client_nonce_of_old_librdkafka_is_accepted_and_nothing_else() {
    let exchange = |nonce: &str| {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, RFC_SERVER_NONCE);
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        let server_first = server.server_first(&rfc_credential()).unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        let message = rfc_client_final_with_nonce(&server_first, nonce);
        server.client_final(message.as_bytes()).map(drop)
    };
    let combined = format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}");
    assert_eq!(exchange(&combined), Ok(()));
    assert_eq!(exchange(&format!("{RFC_CLIENT_NONCE}{combined}")), Ok(()));
    for refused in [
        format!("x{combined}"),
        format!("{RFC_CLIENT_NONCE}{RFC_CLIENT_NONCE}{combined}"),
        RFC_CLIENT_NONCE.to_string(),
    ] {
        assert_eq!(
            exchange(&refused),
            Err(ScramError::NonceMismatch),
            "{refused}"
        );
    }
}
