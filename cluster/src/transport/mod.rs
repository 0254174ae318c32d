//! The network between nodes: QUIC (quinn) on a per-node I/O thread, mutual TLS with the
//! cluster's certificate, frames of bytes with a receipt, and a fault switch for tests. The
//! metadata group's Raft messages travel on it; replication will share the connections.

mod faults;
mod quic;
mod socket;
mod tls;

pub use faults::FaultSwitch;
pub use quic::{Inbound, StartError, Transport, TransportError, TransportLimits};
pub use tls::{ClusterTls, TlsError, CLUSTER_SERVER_NAME};
