//! Where the client commands connect and how: the broker's address and the TLS and SASL
//! settings of its native listener, from flags and the environment.

use clap::Args;
use oxbow_client::{Client, ClientBuilder, ClientError, SaslMechanism};
use std::path::PathBuf;

/// Where the broker is and how to reach it.
#[derive(Args, Debug, Clone)]
pub struct BrokerArg {
    /// The address, TLS and SASL settings.
    #[command(flatten)]
    pub broker: BrokerConnection,
}

/// The broker's native-protocol address and what its listener requires: TLS, SASL or both.
/// The SASL password comes only from the environment (`OXBOW_SASL_PASSWORD`), never from a
/// flag, so it stays out of shell histories and process listings.
#[derive(Args, Debug, Clone)]
pub struct BrokerConnection {
    /// Native-protocol address of the broker.
    #[arg(
        long = "broker",
        value_name = "BROKER",
        default_value = "127.0.0.1:6650",
        global = true
    )]
    pub address: String,
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

impl BrokerConnection {
    /// A client builder for these settings, with the SASL mechanism and username falling back
    /// to `OXBOW_SASL_MECHANISM` and `OXBOW_SASL_USERNAME` and the password from
    /// `OXBOW_SASL_PASSWORD`, looked up by `var` (the environment). A username or password
    /// without a mechanism, or a mechanism without both, is an error naming what is missing
    /// (never the password).
    pub(super) fn client_builder(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientBuilder, String> {
        let mut builder = Client::builder()
            .broker(&self.address)
            .client_name("oxbow-cli");
        match (&self.tls_ca, &self.tls_server_name) {
            (Some(ca), name) => {
                builder = builder.tls_ca_file(ca);
                if let Some(name) = name {
                    builder = builder.tls_server_name(name);
                }
            }
            (None, Some(_)) => return Err("--tls-server-name needs --tls-ca".into()),
            (None, None) => {}
        }
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
            return Ok(builder);
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
        Ok(builder.sasl(mechanism, username, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(args: &[&str]) -> BrokerConnection {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            broker: BrokerArg,
        }
        let argv = std::iter::once("oxbow").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().broker.broker
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            (vars.iter())
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn nothing_given_keeps_a_plain_connection() {
        let plain = connection(&[]);
        assert_eq!(plain.address, "127.0.0.1:6650");
        let shown = format!("{:?}", plain.client_builder(env(&[])).unwrap());
        assert!(
            shown.contains("tls_ca_file: None") && shown.contains("sasl: None"),
            "{shown}"
        );
    }

    #[test]
    fn flags_and_environment_make_tls_and_sasl() {
        let flags = connection(&[
            "--broker",
            "10.0.0.1:6650",
            "--tls-ca",
            "ca.pem",
            "--tls-server-name",
            "oxbow.example",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "alice",
        ]);
        let vars = [
            ("OXBOW_SASL_PASSWORD", "hunter2"),
            ("OXBOW_SASL_USERNAME", "bob"),
        ];
        let shown = format!("{:?}", flags.client_builder(env(&vars)).unwrap());
        for expected in ["ca.pem", "oxbow.example", "ScramSha512", "\"alice\""] {
            assert!(shown.contains(expected), "{expected} in {shown}");
        }
        assert!(!shown.contains("hunter2"), "{shown}");

        let vars = [
            ("OXBOW_SASL_MECHANISM", "PLAIN"),
            ("OXBOW_SASL_USERNAME", "bob"),
            ("OXBOW_SASL_PASSWORD", "hunter2"),
        ];
        let shown = format!("{:?}", connection(&[]).client_builder(env(&vars)).unwrap());
        assert!(
            shown.contains("Plain") && shown.contains("\"bob\""),
            "{shown}"
        );
    }

    #[test]
    fn incomplete_settings_say_what_is_missing() {
        let missing = |args: &[&str], vars: &[(&str, &str)]| {
            let error = connection(args).client_builder(env(vars)).unwrap_err();
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
        assert!(missing(&["--tls-server-name", "x"], &[]).contains("--tls-ca"));
    }
}
