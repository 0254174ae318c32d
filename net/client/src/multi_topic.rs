//! A consumer of one subscription name over several topics, or over every topic a regular
//! expression matches (looked for again every `pattern_refresh`, so that topics created later
//! are read too). Underneath, one [`Consumer`] per topic; receiving takes from them in turn,
//! so that a busy topic does not starve a quiet one.

use crate::acker::Acker;
use crate::consumer::{Consumer, ConsumerBuilder};
use crate::error::ClientError;
use crate::message::Message;
use crate::tiers::{within, Receive};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Which topics a consumer of several reads.
#[derive(Clone, Debug)]
pub(crate) enum Selection {
    /// These topics.
    Topics(Vec<String>),
    /// Every topic whose whole name matches, now and later (anchored at both ends).
    Pattern(regex::Regex),
}

/// A consumer of several topics ([`crate::Client::consumer_of_topics`],
/// [`crate::Client::consumer_of_pattern`]).
pub struct MultiTopicConsumer {
    /// Settings of every topic's consumer (their topic aside).
    spec: ConsumerBuilder,
    selection: Selection,
    members: Vec<Consumer>,
    /// The member asked first next time.
    turn: usize,
    acker: Acker,
    /// When the pattern is matched against the topics again.
    next_discovery: Option<Instant>,
}

impl MultiTopicConsumer {
    /// Attaches on every selected topic (a pattern that matches none yet waits for one).
    pub(crate) async fn build(
        spec: ConsumerBuilder,
        selection: Selection,
    ) -> Result<MultiTopicConsumer, ClientError> {
        let acker = Acker::empty(spec.kind);
        let mut consumer = MultiTopicConsumer {
            spec,
            selection,
            members: Vec::new(),
            turn: 0,
            acker,
            next_discovery: None,
        };
        consumer.discover().await?;
        Ok(consumer)
    }

    /// The topics read now.
    pub fn topics(&self) -> Vec<String> {
        self.members.iter().map(|m| m.topic().to_string()).collect()
    }

    /// A handle that acknowledges the messages of every topic, from anywhere.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// The next messages (of one topic), waiting for the first; up to each topic's receiver
    /// queue.
    pub async fn recv_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        loop {
            if self.next_discovery.is_some_and(|at| at <= Instant::now()) {
                self.discover().await?;
            }
            let next_discovery = self.next_discovery;
            let received = std::future::poll_fn(|cx| self.poll_any(cx));
            match next_discovery {
                Some(at) => match tokio::time::timeout_at(at, received).await {
                    Ok(received) => return received,
                    Err(_) => continue,
                },
                None => return received.await,
            }
        }
    }

    /// Detaches from every topic; a reliable subscription keeps its cursors.
    pub async fn close(self) -> Result<(), ClientError> {
        for member in self.members {
            member.close().await?;
        }
        Ok(())
    }

    /// Attaches on the selected topics not read yet.
    async fn discover(&mut self) -> Result<(), ClientError> {
        let reading: BTreeSet<String> = self.topics().into_iter().collect();
        let wanted: Vec<String> = match &self.selection {
            Selection::Topics(topics) => topics.clone(),
            Selection::Pattern(pattern) => {
                let topics = self.spec.client.list_topics().await?;
                self.next_discovery = Some(Instant::now() + self.spec.pattern_refresh);
                (topics.into_iter())
                    .map(|t| t.name)
                    .filter(|name| pattern.is_match(name))
                    .collect()
            }
        };
        for topic in wanted.into_iter().filter(|t| !reading.contains(t)) {
            let mut spec = self.spec.clone();
            spec.topic = topic.clone();
            let member = spec.build().await?;
            tracing::debug!(%topic, subscription = %self.spec.subscription, "reading a topic");
            self.acker
                .add(Arc::from(topic.as_str()), member.attachment());
            self.members.push(member);
        }
        Ok(())
    }

    /// What the first member with something ready has, starting at the one whose turn it is.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<Result<Vec<Message>, ClientError>> {
        let count = self.members.len();
        for i in 0..count {
            let at = (self.turn + i) % count;
            let member = &mut self.members[at];
            let most = member.spec.receiver_queue as usize;
            match member.poll_batch(cx, most) {
                Poll::Ready(Some(received)) => {
                    self.turn = at + 1;
                    return Poll::Ready(received);
                }
                Poll::Ready(None) => return Poll::Ready(Err(ClientError::Closed)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// A pattern that matches whole topic names only, as Kafka's and Pulsar's do.
pub(crate) fn whole_name_pattern(pattern: &str) -> Result<regex::Regex, ClientError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ClientError::Config(format!("topic pattern {pattern:?}: {e}")))
}

impl Receive for MultiTopicConsumer {
    async fn next_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        self.recv_batch().await
    }

    async fn next_batch_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<Message>>, ClientError> {
        within(timeout, self.recv_batch()).await
    }

    fn try_next_batch(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_any(&mut cx) {
            Poll::Ready(received) => received.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    fn acker(&self) -> Acker {
        MultiTopicConsumer::acker(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_whole_names_only() {
        let pattern = whole_name_pattern("orders-.*").unwrap();
        assert!(pattern.is_match("orders-eu"));
        assert!(!pattern.is_match("old-orders-eu"));
        let pattern = whole_name_pattern("a|ab").unwrap();
        assert!(pattern.is_match("a") && pattern.is_match("ab"));
        assert!(!pattern.is_match("abc"));
        assert!(whole_name_pattern("(").is_err());
    }
}
