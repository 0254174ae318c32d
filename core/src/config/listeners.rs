//! Listeners by name, as Kafka users know them (`listeners` and
//! `listener.security.protocol.map`): each has an address, the address clients are told, and a
//! security protocol. `kafka_listen` / `advertised_kafka_addr` stay the shorthand for one
//! PLAINTEXT Kafka listener, `[[kafka_listeners]]` replace it when given; the same for
//! `native_listen` and `[[native_listeners]]`.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How a listener's connections are secured (Kafka's security protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum SecurityProtocol {
    /// Neither encrypted nor authenticated.
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS; the client is authenticated only by its certificate, when one is asked for.
    #[serde(rename = "SSL")]
    Ssl,
    /// SASL authentication over an unencrypted connection.
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication inside TLS.
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name of the protocol, which is also a listener's default name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients prove who they are (a TLS handshake or SASL), and so can fail to.
    pub fn authenticates(self) -> bool {
        self != SecurityProtocol::Plaintext
    }

    /// Whether a client must authenticate with SASL before anything else.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// SASL mechanisms a listener can offer.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// One `[[kafka_listeners]]` or `[[native_listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The listener's name, unique on the node and the same on every node of a cluster: a
    /// client connected to a listener is told the other brokers' addresses on the listener of
    /// the same name. Defaults to the security protocol's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `ip:port` every shard listens on (port 0: chosen at start).
    pub address: String,
    /// `host:port` clients of this listener are told; defaults to the bound address.
    #[serde(default)]
    pub advertised_address: Option<String>,
    /// How its connections are secured.
    #[serde(default = "plaintext")]
    pub security: SecurityProtocol,
    /// PEM certificate chain, server certificate first (SSL and SASL_SSL).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (SSL and SASL_SSL).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates clients' certificates must chain to. When set, every client must
    /// present one (mutual TLS).
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// SASL mechanisms offered (SASL_PLAINTEXT and SASL_SSL). PLAIN sends the password itself,
    /// so it is offered only when listed.
    #[serde(default = "scram_mechanisms")]
    pub sasl_mechanisms: Vec<String>,
}

fn plaintext() -> SecurityProtocol {
    SecurityProtocol::Plaintext
}

fn scram_mechanisms() -> Vec<String> {
    vec!["SCRAM-SHA-256".to_string(), "SCRAM-SHA-512".to_string()]
}

impl ListenerConfig {
    /// A PLAINTEXT listener: what `kafka_listen` / `advertised_kafka_addr` stand for.
    pub fn plaintext(address: &str, advertised_address: Option<&str>) -> ListenerConfig {
        ListenerConfig {
            name: None,
            address: address.to_string(),
            advertised_address: advertised_address.map(str::to_string),
            security: SecurityProtocol::Plaintext,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            sasl_mechanisms: scram_mechanisms(),
        }
    }

    /// The listener's name (its security protocol's, unless named).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.security.name())
    }

    /// The bind address (validated).
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        (self.address.parse())
            .map_err(|_| ConfigError::new("address", "must be an ip:port address"))
    }

    fn validate(&self, fields: &Fields) -> Result<(), ConfigError> {
        (self.socket_addr()).map_err(|e| ConfigError::new(fields.address, e.reason))?;
        let name = self.name();
        let name_ok = !name.is_empty()
            && name.len() <= LISTENER_NAME_BYTES_MAX
            && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ConfigError::new(
                fields.name,
                format!("{name:?}: 1 to {LISTENER_NAME_BYTES_MAX} of A-Z a-z 0-9 _ -"),
            ));
        }
        if let Some(advertised) = &self.advertised_address {
            let port = advertised.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(ConfigError::new(
                    fields.advertised,
                    format!("{advertised:?} is not host:port"),
                ));
            }
        }
        let security = self.security.name();
        if self.security.uses_tls() {
            if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
                return Err(ConfigError::new(
                    fields.tls,
                    format!("listener {name} is {security}: give tls_cert_file and tls_key_file"),
                ));
            }
        } else if self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_client_ca_file.is_some()
        {
            return Err(ConfigError::new(
                fields.tls,
                format!("listener {name} is {security}, which has no TLS"),
            ));
        }
        if self.security.uses_sasl() {
            if self.sasl_mechanisms.is_empty() {
                return Err(ConfigError::new(
                    fields.sasl,
                    format!("listener {name} is {security} and offers none"),
                ));
            }
            if let Some(unknown) =
                (self.sasl_mechanisms.iter()).find(|m| !SASL_MECHANISMS.contains(&m.as_str()))
            {
                return Err(ConfigError::new(
                    fields.sasl,
                    format!("{unknown:?} is not one of {SASL_MECHANISMS:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Longest listener name.
pub const LISTENER_NAME_BYTES_MAX: usize = 64;

/// The names of a list of listeners' settings, for errors.
pub(super) struct Fields {
    address: &'static str,
    name: &'static str,
    advertised: &'static str,
    tls: &'static str,
    sasl: &'static str,
}

/// `[[kafka_listeners]]`.
pub(super) const KAFKA: Fields = Fields {
    address: "kafka_listeners.address",
    name: "kafka_listeners.name",
    advertised: "kafka_listeners.advertised_address",
    tls: "kafka_listeners.tls_cert_file",
    sasl: "kafka_listeners.sasl_mechanisms",
};

/// `[[native_listeners]]`.
pub(super) const NATIVE: Fields = Fields {
    address: "native_listeners.address",
    name: "native_listeners.name",
    advertised: "native_listeners.advertised_address",
    tls: "native_listeners.tls_cert_file",
    sasl: "native_listeners.sasl_mechanisms",
};

/// `[metrics_listener]`.
const METRICS: Fields = Fields {
    address: "metrics_listener.address",
    name: "metrics_listener.name",
    advertised: "metrics_listener.advertised_address",
    tls: "metrics_listener.tls_cert_file",
    sasl: "metrics_listener.security",
};

/// Checks the metrics listener: HTTP knows no SASL, so PLAINTEXT or SSL.
pub(super) fn validate_metrics(listener: &ListenerConfig) -> Result<(), ConfigError> {
    if listener.security.uses_sasl() {
        return Err(ConfigError::new(
            METRICS.sasl,
            "the metrics endpoint is HTTP: PLAINTEXT or SSL (mutual TLS with tls_client_ca_file)",
        ));
    }
    listener.validate(&METRICS)
}

/// Checks each listener and that their names and addresses are unique.
pub(super) fn validate(listeners: &[ListenerConfig], fields: &Fields) -> Result<(), ConfigError> {
    for (at, listener) in listeners.iter().enumerate() {
        listener.validate(fields)?;
        for other in &listeners[..at] {
            if other.name() == listener.name() {
                return Err(ConfigError::new(
                    fields.name,
                    format!("two listeners are named {}", listener.name()),
                ));
            }
            let (a, b) = (other.socket_addr()?, listener.socket_addr()?);
            if a == b && a.port() != 0 {
                return Err(ConfigError::new(
                    fields.address,
                    format!("two listeners bind {a}"),
                ));
            }
        }
    }
    Ok(())
}

/// Limits on connections that have not authenticated yet (the `[authentication]` section), so
/// that strangers cannot hold memory, connections or a shard's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// A connection must finish its TLS handshake and SASL authentication this long after it
    /// is accepted, or it is closed.
    pub timeout_ms: u64,
    /// Largest request accepted before authentication (Kafka's `sasl.server.max.receive.size`).
    pub unauthenticated_frame_bytes_max: u32,
    /// A failed authentication is answered, and its connection closed, this much later
    /// (Kafka's `connection.failed.authentication.delay.ms`): guessing passwords is slowed
    /// without a shard waiting, as the delay is a timer on the connection's own task.
    pub failure_delay_ms: u64,
    /// Failed authentications one source address may have within `failure_window_ms`
    /// before its new connections are closed at accept, until the window ends (counted per
    /// shard).
    pub failures_per_address_max: u32,
    /// The window of `failures_per_address_max`.
    pub failure_window_ms: u64,
    /// PLAIN password checks (one PBKDF2 each) a shard makes per second, any of them at once
    /// after a quiet second; a login whose turn is further off than `timeout_ms` is refused
    /// as throttled. SCRAM costs the broker no PBKDF2 and is not counted.
    pub password_checks_per_second_max: u32,
    /// TLS handshakes (a key exchange and a signature each) a shard starts per second, any of
    /// them at once after a quiet second; a connection whose turn is further off than
    /// `timeout_ms` is closed at accept, counted as throttled.
    pub tls_handshakes_per_second_max: u32,
}

impl Default for AuthenticationConfig {
    fn default() -> AuthenticationConfig {
        AuthenticationConfig {
            timeout_ms: 10_000,
            unauthenticated_frame_bytes_max: 512 << 10,
            failure_delay_ms: 100,
            failures_per_address_max: 20,
            failure_window_ms: 60_000,
            password_checks_per_second_max: 100,
            tls_handshakes_per_second_max: 500,
        }
    }
}

impl AuthenticationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err(ConfigError::new(
                "authentication.timeout_ms",
                "must be 100 ms to 10 minutes",
            ));
        }
        if !(1024..=16 << 20).contains(&self.unauthenticated_frame_bytes_max) {
            return Err(ConfigError::new(
                "authentication.unauthenticated_frame_bytes_max",
                "must be 1 KiB to 16 MiB",
            ));
        }
        if self.failures_per_address_max == 0 {
            return Err(ConfigError::new(
                "authentication.failures_per_address_max",
                "must be positive",
            ));
        }
        if !(1..=3_600_000).contains(&self.failure_window_ms) {
            return Err(ConfigError::new(
                "authentication.failure_window_ms",
                "must be 1 ms to 1 hour",
            ));
        }
        if self.failure_delay_ms > 60_000 {
            return Err(ConfigError::new(
                "authentication.failure_delay_ms",
                "must be at most a minute",
            ));
        }
        for (value, name) in [
            (
                self.password_checks_per_second_max,
                "authentication.password_checks_per_second_max",
            ),
            (
                self.tls_handshakes_per_second_max,
                "authentication.tls_handshakes_per_second_max",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(name, "must be positive"));
            }
        }
        Ok(())
    }
}

/// Kafka's ACL authorizer (the `[authorizer]` section); off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizerConfig {
    /// Check every request against the ACLs (off: every client may do everything).
    pub enabled: bool,
    /// Principals allowed everything, e.g. `["User:admin"]` (Kafka's `super.users`).
    pub super_users: Vec<String>,
    /// Allow what no ACL names at all (Kafka's `allow.everyone.if.no.acl.found`); off by
    /// default, so that a new topic is closed until an ACL opens it.
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) =
            (self.super_users.iter()).find(|u| !u.starts_with("User:") || u.len() == "User:".len())
        {
            return Err(ConfigError::new(
                "authorizer.super_users",
                format!("{bad:?} is not User:NAME"),
            ));
        }
        Ok(())
    }
}
