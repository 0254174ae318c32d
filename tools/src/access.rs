//! How the client commands reach a listener that requires TLS, SASL or both: one set of flags
//! (`--tls-ca`, `--tls-server-name`, `--sasl-mechanism`, `--sasl-username`) and environment
//! variables for every command, native or Kafka. The SASL password comes only from the
//! environment (`OXBOW_SASL_PASSWORD`), never from a flag, so it stays out of shell histories
//! and process listings.

use crate::bench::kafka::Connection;
use crate::bench::tls::Tls;
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use oxbow_client::sasl::{SaslCredentials, SaslExchange, Step};
use oxbow_client::{ClientError, SaslMechanism};
use std::path::PathBuf;

const SASL_HANDSHAKE_VERSION: i16 = 1;
const SASL_AUTHENTICATE_VERSION: i16 = 2;
/// The listener has no SASL (Kafka's answer to a handshake there).
const ILLEGAL_SASL_STATE: i16 = 34;

/// TLS and SASL settings of a listener.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Connect over TLS, trusting only the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must carry, a DNS name or an IP address (with
    /// --tls-ca) [default: the host of each broker's address].
    #[arg(long, value_name = "NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Authenticate with SASL: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (which sends the
    /// password as is: use it with --tls-ca) [default: $OXBOW_SASL_MECHANISM]. The password
    /// is read from $OXBOW_SASL_PASSWORD.
    #[arg(long, value_name = "MECHANISM", global = true)]
    pub sasl_mechanism: Option<String>,
    /// The SASL user [default: $OXBOW_SASL_USERNAME].
    #[arg(long, value_name = "USER", global = true)]
    pub sasl_username: Option<String>,
}

impl SecurityArgs {
    /// Fails when `--tls-server-name` comes without `--tls-ca`.
    pub fn check_tls(&self) -> Result<(), String> {
        match (&self.tls_ca, &self.tls_server_name) {
            (None, Some(_)) => Err("--tls-server-name needs --tls-ca".into()),
            _ => Ok(()),
        }
    }

    /// The SASL credentials, if any: mechanism and username from the flags or else
    /// `OXBOW_SASL_MECHANISM` and `OXBOW_SASL_USERNAME`, the password from
    /// `OXBOW_SASL_PASSWORD`, looked up by `var` (the environment). A username or password
    /// without a mechanism, or a mechanism without both, is an error naming what is missing
    /// (never the password).
    pub fn sasl(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SaslCredentials>, String> {
        let mechanism = (self.sasl_mechanism.clone()).or_else(|| var("OXBOW_SASL_MECHANISM"));
        let username = (self.sasl_username.clone()).or_else(|| var("OXBOW_SASL_USERNAME"));
        let password = var("OXBOW_SASL_PASSWORD");
        let Some(mechanism) = mechanism else {
            if username.is_some() {
                return Err(
                    "a SASL username (--sasl-username or OXBOW_SASL_USERNAME) needs \
                     --sasl-mechanism (or OXBOW_SASL_MECHANISM)"
                        .into(),
                );
            }
            if password.is_some() {
                return Err("OXBOW_SASL_PASSWORD is set but no SASL mechanism is: give \
                     --sasl-mechanism (or OXBOW_SASL_MECHANISM), or unset it"
                    .into());
            }
            return Ok(None);
        };
        let mechanism: SaslMechanism = mechanism
            .parse()
            .map_err(|e: ClientError| format!("--sasl-mechanism: {e}"))?;
        let username = username.ok_or_else(|| {
            format!("--sasl-mechanism {mechanism} needs --sasl-username (or OXBOW_SASL_USERNAME)")
        })?;
        let password = password.ok_or_else(|| {
            format!("--sasl-mechanism {mechanism} needs the password in OXBOW_SASL_PASSWORD")
        })?;
        let credentials = SaslCredentials::new(mechanism, username, password);
        credentials.validate().map_err(|e| e.to_string())?;
        Ok(Some(credentials))
    }

    /// What a Kafka-side command needs to open its connections, from these flags and the
    /// environment.
    pub fn kafka_access(&self) -> Result<KafkaAccess, String> {
        self.check_tls()?;
        let tls = match &self.tls_ca {
            Some(ca) => Some(Tls::load(ca, self.tls_server_name.as_deref())?),
            None => None,
        };
        Ok(KafkaAccess {
            tls,
            sasl: self.sasl(|name| std::env::var(name).ok())?,
        })
    }
}

/// How every connection of a Kafka-side command is opened: TLS if `tls`, then SASL
/// (SaslHandshake v1 and SaslAuthenticate) if `sasl`.
#[derive(Clone, Default)]
pub struct KafkaAccess {
    pub tls: Option<Tls>,
    pub sasl: Option<SaslCredentials>,
}

/// SaslHandshake v1 then SaslAuthenticate v2 until the exchange is done. Fails with the
/// broker's refusal (its error message) or when the broker's SCRAM signature does not verify.
pub async fn authenticate(
    connection: &mut Connection,
    credentials: &SaslCredentials,
) -> Result<(), String> {
    let mechanism = credentials.mechanism().name();
    let handshake = SaslHandshakeRequest::default().with_mechanism(text(mechanism));
    let answer = connection.call(SASL_HANDSHAKE_VERSION, &handshake).await?;
    if answer.error_code != 0 {
        let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(match answer.error_code {
            ILLEGAL_SASL_STATE => "the listener does not use SASL".to_string(),
            _ => format!(
                "{mechanism} refused (error {}); the listener offers {}",
                answer.error_code,
                offered.join(", ")
            ),
        });
    }
    let (mut exchange, mut token) = SaslExchange::start(credentials).map_err(|e| e.to_string())?;
    loop {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let last = exchange.awaits_last_answer();
        let answer = connection.call(SASL_AUTHENTICATE_VERSION, &request).await?;
        if answer.error_code != 0 {
            return Err(answer
                .error_message
                .map_or_else(|| format!("error {}", answer.error_code), |m| m.to_string()));
        }
        match exchange.step(&answer.auth_bytes, last) {
            Ok(Step::Send(next)) => token = next,
            Ok(Step::Done) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn security(args: &[&str]) -> SecurityArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            security: SecurityArgs,
        }
        let argv = std::iter::once("oxbow").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().security
    }

    /// An environment of `vars` only, for the settings' tests.
    pub(crate) fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            (vars.iter())
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_the_password_is_never_shown() {
        let flags = security(&[
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "alice",
        ]);
        let vars = [
            ("OXBOW_SASL_PASSWORD", "hunter2"),
            ("OXBOW_SASL_USERNAME", "bob"),
        ];
        let credentials = flags.sasl(env(&vars)).unwrap().unwrap();
        assert_eq!(credentials.mechanism(), SaslMechanism::ScramSha512);
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("\"alice\"") && !shown.contains("hunter2"),
            "{shown}"
        );

        let vars = [
            ("OXBOW_SASL_MECHANISM", "PLAIN"),
            ("OXBOW_SASL_USERNAME", "bob"),
            ("OXBOW_SASL_PASSWORD", "hunter2"),
        ];
        let credentials = security(&[]).sasl(env(&vars)).unwrap().unwrap();
        assert_eq!(credentials.mechanism(), SaslMechanism::Plain);
        assert!(security(&[]).sasl(env(&[])).unwrap().is_none());
    }

    #[test]
    fn incomplete_settings_say_what_is_missing() {
        let missing = |args: &[&str], vars: &[(&str, &str)]| {
            let error = security(args).sasl(env(vars)).unwrap_err();
            assert!(!error.contains("hunter2"), "{error}");
            error
        };
        let password = [("OXBOW_SASL_PASSWORD", "hunter2")];
        let scram = ["--sasl-mechanism", "SCRAM-SHA-256"];
        assert!(missing(&scram, &password).contains("--sasl-username"));
        let user = ["--sasl-mechanism", "PLAIN", "--sasl-username", "a"];
        assert!(missing(&user, &[]).contains("OXBOW_SASL_PASSWORD"));
        assert!(missing(&["--sasl-username", "a"], &password).contains("--sasl-mechanism"));
        assert!(missing(&[], &password).contains("OXBOW_SASL_PASSWORD"));
        let unknown = ["--sasl-mechanism", "GSSAPI", "--sasl-username", "a"];
        assert!(missing(&unknown, &password).contains("GSSAPI"));
        let empty = [("OXBOW_SASL_PASSWORD", "")];
        assert!(missing(&user, &empty).contains("password is empty"));
        let lone_name = security(&["--tls-server-name", "x"]).check_tls();
        assert!(lone_name.unwrap_err().contains("--tls-ca"));
    }
}
