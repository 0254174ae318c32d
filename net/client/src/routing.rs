//! Which connection serves which partition: the client's view of the cluster, learned with
//! `Metadata` from any broker and refreshed when a broker answers `NotLeader`. Connections to
//! the other brokers open on first use; on one node everything goes over the first one.

use crate::backoff::Backoff;
use crate::connection::{self, Security, Shared};
use crate::error::ClientError;
use crate::ClientBuilder;
use oxbow_core::native::{ClientFrame, ErrorCode, ServerFrame};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// The brokers, their connections and the leaders of the topics asked about so far.
pub(crate) struct Router {
    settings: Arc<ClientBuilder>,
    /// TLS and SASL, prepared once for every connection.
    security: Security,
    ids: Arc<AtomicU64>,
    view: Mutex<View>,
}

#[derive(Default)]
struct View {
    /// Native address per broker id, as the last `Metadata` answer said.
    brokers: HashMap<i32, String>,
    connections: HashMap<i32, Arc<Shared>>,
    /// Per topic, the leader of each partition (-1: none).
    leaders: HashMap<String, Vec<i32>>,
}

impl Router {
    /// Connects to the bootstrap broker.
    pub(crate) async fn connect(
        settings: Arc<ClientBuilder>,
        security: Security,
    ) -> Result<Router, ClientError> {
        let ids = Arc::new(AtomicU64::new(1));
        let first = connection::connect(
            &settings.broker,
            &settings.client_name,
            settings.request_timeout,
            &security,
            ids.clone(),
        )
        .await?;
        let mut view = View::default();
        view.brokers
            .insert(first.broker_id, settings.broker.clone());
        view.connections.insert(first.broker_id, first);
        Ok(Router {
            settings,
            security,
            ids,
            view: Mutex::new(view),
        })
    }

    /// Opens a connection to `addr`, secured as every connection of this client is.
    async fn open(&self, addr: &str) -> Result<Arc<Shared>, ClientError> {
        let settings = &self.settings;
        connection::connect(
            addr,
            &settings.client_name,
            settings.request_timeout,
            &self.security,
            self.ids.clone(),
        )
        .await
    }

    pub(crate) fn settings(&self) -> &Arc<ClientBuilder> {
        &self.settings
    }

    /// The waits of a new series of attempts to reach a broker.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.retry_backoff, self.settings.retry_backoff_max)
    }

    /// How often a request refused with `NotLeader` is sent again after a metadata refresh.
    pub(crate) fn not_leader_retries(&self) -> u32 {
        self.settings.not_leader_retries
    }

    /// Whether every connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        let view = self.view.lock().expect("not poisoned");
        view.connections.values().all(|c| c.is_closed())
    }

    /// An open connection to any broker (for requests every broker answers alike): one that
    /// is open, else a new one to the bootstrap address, else to any broker known.
    pub(crate) async fn any(&self) -> Result<Arc<Shared>, ClientError> {
        let (open, mut addresses) = {
            let view = self.view.lock().expect("not poisoned");
            let open = view.connections.values().find(|c| !c.is_closed()).cloned();
            let addresses: Vec<String> = view.brokers.values().cloned().collect();
            (open, addresses)
        };
        if let Some(open) = open {
            return Ok(open);
        }
        addresses.insert(0, self.settings.broker.clone());
        let mut last = ClientError::Closed;
        for addr in addresses {
            match self.open(&addr).await {
                Ok(shared) => return Ok(self.keep(shared)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Remembers a new connection, unless an open one to the same broker appeared meanwhile.
    fn keep(&self, shared: Arc<Shared>) -> Arc<Shared> {
        let mut view = self.view.lock().expect("not poisoned");
        match view.connections.get(&shared.broker_id) {
            Some(existing) if !existing.is_closed() => existing.clone(),
            _ => {
                view.connections.insert(shared.broker_id, shared.clone());
                shared
            }
        }
    }

    /// The open connection to `broker`, opened now if there is none.
    pub(crate) async fn to_broker(&self, broker: i32) -> Result<Arc<Shared>, ClientError> {
        let (open, addr) = {
            let mut view = self.view.lock().expect("not poisoned");
            let open = view
                .connections
                .get(&broker)
                .filter(|c| !c.is_closed())
                .cloned();
            if open.is_none() {
                view.connections.remove(&broker);
            }
            (open, view.brokers.get(&broker).cloned())
        };
        if let Some(open) = open {
            return Ok(open);
        }
        let addr = addr.ok_or_else(|| not_leader(format!("broker {broker} is not known")))?;
        let shared = self.open(&addr).await?;
        if shared.broker_id != broker {
            return Err(ClientError::Protocol(format!(
                "{addr} is broker {}, metadata said broker {broker}",
                shared.broker_id
            )));
        }
        Ok(self.keep(shared))
    }

    /// Asks a broker for the brokers and the leaders of `topic`, and remembers them.
    pub(crate) async fn refresh(&self, topic: &str) -> Result<Vec<i32>, ClientError> {
        let shared = self.any().await?;
        let request_id = shared.next_id();
        let frame = ClientFrame::Metadata {
            request_id,
            topics: vec![topic.to_string()],
        };
        let ServerFrame::Metadata {
            brokers, topics, ..
        } = shared.request(request_id, &frame, &[]).await?
        else {
            return Err(ClientError::Protocol(
                "unexpected answer to Metadata".into(),
            ));
        };
        let leaders = topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.leaders)
            .ok_or_else(|| ClientError::Refused {
                code: ErrorCode::UnknownTopic,
                message: format!("unknown topic {topic}"),
            })?;
        let mut view = self.view.lock().expect("not poisoned");
        for broker in brokers {
            view.brokers.insert(broker.id, broker.native_addr);
        }
        view.leaders.insert(topic.to_string(), leaders.clone());
        Ok(leaders)
    }

    /// The leaders of `topic`'s partitions, as last learned (asked now if never).
    pub(crate) async fn leaders(&self, topic: &str) -> Result<Vec<i32>, ClientError> {
        let known = (self.view.lock().expect("not poisoned").leaders)
            .get(topic)
            .cloned();
        match known {
            Some(leaders) => Ok(leaders),
            None => self.refresh(topic).await,
        }
    }

    /// Drops what is known of `topic`'s leaders: the next lookup asks again.
    pub(crate) fn forget(&self, topic: &str) {
        (self.view.lock().expect("not poisoned").leaders).remove(topic);
    }

    /// The connection to the leader of one partition.
    pub(crate) async fn leader_of(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Shared>, ClientError> {
        let leaders = self.leaders(topic).await?;
        let leader = *leaders
            .get(partition as usize)
            .ok_or_else(|| ClientError::Refused {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic} has no partition {partition}"),
            })?;
        if leader < 0 {
            return Err(not_leader(format!("{topic}-{partition} has no leader now")));
        }
        self.to_broker(leader).await
    }

    /// Every partition of `topic` grouped by the connection to its leader; fails when a
    /// partition has no leader.
    pub(crate) async fn by_leader(
        &self,
        topic: &str,
    ) -> Result<Vec<(Arc<Shared>, Vec<u32>)>, ClientError> {
        let leaders = self.leaders(topic).await?;
        let mut grouped: Vec<(i32, Vec<u32>)> = Vec::new();
        for (partition, &leader) in leaders.iter().enumerate() {
            if leader < 0 {
                return Err(not_leader(format!("{topic}-{partition} has no leader now")));
            }
            match grouped.iter_mut().find(|(id, _)| *id == leader) {
                Some((_, partitions)) => partitions.push(partition as u32),
                None => grouped.push((leader, vec![partition as u32])),
            }
        }
        let mut out = Vec::with_capacity(grouped.len());
        for (leader, partitions) in grouped {
            out.push((self.to_broker(leader).await?, partitions));
        }
        Ok(out)
    }
}

fn not_leader(message: String) -> ClientError {
    ClientError::Refused {
        code: ErrorCode::NotLeader,
        message,
    }
}

/// Whether an error means the request went to the wrong broker (ask for metadata and retry).
pub(crate) fn is_not_leader(error: &ClientError) -> bool {
    error.code() == Some(ErrorCode::NotLeader)
}

/// Whether the broker a request went to could not be reached: a leader that has just shut
/// down (its controlled shutdown moved leadership, but the broker asked for metadata may not
/// have applied the move yet), so metadata is worth asking for again.
pub(crate) fn is_unreachable(error: &ClientError) -> bool {
    matches!(error, ClientError::Io(_) | ClientError::Closed)
}
