//! A consumer's settings, and attaching it on every partition's leader.

use super::Consumer;
use crate::acker::{Acker, Attached, Attachment, Legs};
use crate::connection::ConsumerEvent;
use crate::error::ClientError;
use crate::multi_topic::{MultiTopicConsumer, Selection};
use crate::routing::{is_not_leader, is_unreachable, Router};
use crate::tiers::TieredConsumer;
use crate::{Client, Tier};
use oxbow_core::native::{ClientFrame, Mode, ServerFrame, StartPosition, SubscriptionType};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Numbers the consumers of this process that were not given a name.
static NEXT_CONSUMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Settings of a consumer.
#[derive(Clone)]
pub struct ConsumerBuilder {
    pub(crate) client: Client,
    pub(crate) topic: String,
    pub(crate) subscription: String,
    pub(crate) kind: SubscriptionType,
    pub(crate) mode: Mode,
    pub(crate) name: String,
    pub(crate) priority: i32,
    pub(crate) start: StartPosition,
    pub(crate) receiver_queue: u32,
    pub(crate) reconnect_timeout: Duration,
    /// Several topics (then built with `build_multi`).
    pub(crate) selection: Option<Selection>,
    pub(crate) pattern_refresh: Duration,
}

/// How often a consumer of a topic pattern looks for new matching topics by default (as
/// Pulsar's `patternAutoDiscoveryPeriod`).
pub const DEFAULT_PATTERN_REFRESH: Duration = Duration::from_secs(60);

impl ConsumerBuilder {
    pub(crate) fn new(client: Client, topic: String, subscription: String) -> ConsumerBuilder {
        ConsumerBuilder {
            client,
            topic,
            subscription,
            kind: SubscriptionType::Exclusive,
            mode: Mode::Reliable,
            // Unique per consumer: a name of its own is what makes a consumer the same one
            // again after a reconnection (see `name`).
            name: format!(
                "consumer-{}-{}",
                std::process::id(),
                NEXT_CONSUMER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            priority: 0,
            start: StartPosition::Earliest,
            receiver_queue: 1000,
            reconnect_timeout: crate::config::DEFAULT_RECONNECT_TIMEOUT,
            selection: None,
            pattern_refresh: DEFAULT_PATTERN_REFRESH,
        }
    }

    /// A consumer of several topics under one subscription name.
    pub(crate) fn of(client: Client, selection: Selection, subscription: String) -> Self {
        let mut builder = ConsumerBuilder::new(client, String::new(), subscription);
        builder.selection = Some(selection);
        builder
    }

    /// How often a consumer of a topic pattern looks for new matching topics (default 60 s).
    pub fn pattern_refresh(mut self, every: Duration) -> ConsumerBuilder {
        self.pattern_refresh = every.max(Duration::from_millis(1));
        self
    }

    /// Attaches on every topic of the selection ([`Client::consumer_of_topics`],
    /// [`Client::consumer_of_pattern`]; a builder of one topic gives a consumer of that one).
    /// Each topic's consumer has this builder's settings and reconnects by itself.
    pub async fn build_multi(self) -> Result<MultiTopicConsumer, ClientError> {
        let mut spec = self;
        let selection =
            (spec.selection.take()).unwrap_or_else(|| Selection::Topics(vec![spec.topic.clone()]));
        MultiTopicConsumer::build(spec, selection).await
    }

    /// Subscription type (default exclusive).
    pub fn kind(mut self, kind: SubscriptionType) -> ConsumerBuilder {
        self.kind = kind;
        self
    }

    /// Delivery mode (default reliable).
    pub fn mode(mut self, mode: Mode) -> ConsumerBuilder {
        self.mode = mode;
        self
    }

    /// Consumer name (default: unique per consumer). An Exclusive or Failover consumer that
    /// attaches again under its name, from a new connection after its old one dropped,
    /// replaces its stale session at once and takes the same place again.
    pub fn name(mut self, name: impl Into<String>) -> ConsumerBuilder {
        self.name = name.into();
        self
    }

    /// Failover priority: lower goes first (default 0).
    pub fn priority(mut self, priority: i32) -> ConsumerBuilder {
        self.priority = priority;
        self
    }

    /// Where a new subscription starts (default earliest).
    pub fn start(mut self, start: StartPosition) -> ConsumerBuilder {
        self.start = start;
        self
    }

    /// Messages the broker may push ahead per partition before the application takes them.
    pub fn receiver_queue(mut self, messages: u32) -> ConsumerBuilder {
        self.receiver_queue = messages.max(1);
        self
    }

    /// How long the consumer keeps trying to attach again after the connection to one of its
    /// leaders ends (a broker restart, a leader moving), default 60 s. Meanwhile it looks the
    /// leaders up again, reconnects and subscribes anew under its name, with backoff; the
    /// application sees no error, and messages it had not acknowledged come again (reliable
    /// subscriptions). Past the timeout, the next receive answers
    /// [`ClientError::ReconnectFailed`]. `Duration::ZERO`: the consumer ends at the first lost
    /// connection.
    pub fn reconnect_timeout(mut self, timeout: Duration) -> ConsumerBuilder {
        self.reconnect_timeout = timeout;
        self
    }

    /// Applies the settings of a [`crate::ConsumerConfig`].
    pub fn config(self, config: &crate::ConsumerConfig) -> Result<ConsumerBuilder, ClientError> {
        let mut builder = self
            .kind(config.kind()?)
            .mode(config.mode()?)
            .priority(config.priority)
            .start(config.start()?)
            .receiver_queue(config.receiver_queue)
            .reconnect_timeout(Duration::from_millis(config.reconnect_timeout_ms));
        if let Some(name) = &config.name {
            builder = builder.name(name);
        }
        Ok(builder)
    }

    /// Attaches the consumer on every partition's leader and grants its first permits. A
    /// leader that moved meanwhile (`NotLeader`) makes it look the leaders up and try again
    /// (`not_leader_retries`).
    pub async fn build(self) -> Result<Consumer, ClientError> {
        if self.selection.is_some() {
            return Err(ClientError::Config(
                "a consumer of several topics is built with build_multi".into(),
            ));
        }
        let router = self.client.router.clone();
        let mut retries = router.not_leader_retries();
        loop {
            match self.attach(&router).await {
                Err(e) if (is_not_leader(&e) || is_unreachable(&e)) && retries > 0 => {
                    retries -= 1;
                    router.forget(&self.topic);
                    tokio::time::sleep(router.settings().retry_backoff).await;
                }
                result => return result,
            }
        }
    }

    async fn attach(&self, router: &Router) -> Result<Consumer, ClientError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (attached, partitions) = self.attach_once(router, &events_tx, false).await?;
        let consumer_id = attached.consumer_id;
        let reconnects = !self.reconnect_timeout.is_zero();
        let attachment = Arc::new(Attachment::new(attached, reconnects));
        let topic = Arc::from(self.topic.as_str());
        Ok(Consumer {
            acker: Acker::new(topic, attachment.clone(), self.kind),
            attachment,
            consumer_id,
            spec: self.clone(),
            events_tx,
            reattaching: None,
            partitions,
            events,
            ready: VecDeque::new(),
            taken: vec![0; partitions as usize],
            positions: HashMap::new(),
            ended: false,
            held_error: None,
        })
    }

    /// Attaches under a new consumer id on every partition's leader (all or none), its
    /// deliveries going to `events`, and grants the first permits; with the topic's
    /// partition count. `reattaching`: after a lost connection, so that the broker replaces
    /// a session of this consumer's name still attached there, whatever the type.
    pub(crate) async fn attach_once(
        &self,
        router: &Router,
        events: &mpsc::UnboundedSender<ConsumerEvent>,
        reattaching: bool,
    ) -> Result<(Attached, u32), ClientError> {
        let by_leader = router.by_leader(&self.topic).await?;
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        let mut legs = Legs::default();
        let mut consumer_id = 0;
        let mut partitions = 0;
        for (shared, led) in &by_leader {
            if consumer_id == 0 {
                consumer_id = shared.next_id();
            }
            // Registered before subscribing: messages may follow the answer immediately.
            shared.add_consumer(consumer_id, topic.clone(), events.clone());
            let request_id = shared.next_id();
            let frame = ClientFrame::Subscribe {
                request_id,
                consumer_id,
                topic: self.topic.clone(),
                subscription: self.subscription.clone(),
                kind: self.kind,
                mode: self.mode,
                consumer_name: self.name.clone(),
                priority: self.priority,
                start: self.start,
                partitions: Some(led.clone()),
                reattaching,
            };
            let failure = match shared.request(request_id, &frame, &[]).await {
                Ok(ServerFrame::Subscribed {
                    partitions: count, ..
                }) => {
                    partitions = count;
                    legs.add(shared.clone(), led);
                    continue;
                }
                Ok(other) => ClientError::Protocol(format!("unexpected answer {other:?}")),
                Err(e) => e,
            };
            shared.remove_consumer(consumer_id);
            // All or none: detach from the leaders that accepted.
            let _ = legs.close(consumer_id).await;
            return Err(failure);
        }
        legs.send_each(&ClientFrame::Flow {
            consumer_id,
            partition: None,
            permits: self.receiver_queue,
        })?;
        Ok((Attached { legs, consumer_id }, partitions))
    }

    /// Builds the consumer in the tier `tier` names.
    pub async fn build_tier(self, tier: Tier) -> Result<TieredConsumer, ClientError> {
        Ok(match tier {
            Tier::Stream => TieredConsumer::Stream(self.build().await?),
            Tier::Buffered(n) => TieredConsumer::Buffered(self.build().await?, n.max(1)),
            Tier::Dedicated => TieredConsumer::Dedicated(self.dedicated(1024).await?),
        })
    }
}
