//! Where the native client commands connect and how: the broker's address and the TLS and
//! SASL settings of its native listener (`crate::access`).

use crate::access::SecurityArgs;
use clap::Args;
use oxbow_client::{Client, ClientBuilder};

/// Where the broker is and how to reach it.
#[derive(Args, Debug, Clone)]
pub struct BrokerArg {
    /// The address, TLS and SASL settings.
    #[command(flatten)]
    pub broker: BrokerConnection,
}

/// The broker's native-protocol address and what its listener requires: TLS, SASL or both.
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
    /// TLS and SASL.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl BrokerConnection {
    /// A client builder for these settings, SASL looked up by `var` (the environment) as
    /// [`SecurityArgs::sasl`] says.
    pub(super) fn client_builder(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientBuilder, String> {
        let mut builder = Client::builder()
            .broker(&self.address)
            .client_name("oxbow-cli");
        self.security.check_tls()?;
        if let Some(ca) = &self.security.tls_ca {
            builder = builder.tls_ca_file(ca);
            if let Some(name) = &self.security.tls_server_name {
                builder = builder.tls_server_name(name);
            }
        }
        Ok(match self.security.sasl(var)? {
            Some(credentials) => builder.sasl_credentials(credentials),
            None => builder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tests::env;

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
}
