//! The dedicated tier: a consumer with its own connection on its own thread and runtime,
//! handing batches to the application through a bounded channel. Decoding and socket work
//! stay off the application's runtime, which is what the highest-throughput users want.

use crate::acker::Acker;
use crate::consumer::ConsumerBuilder;
use crate::error::ClientError;
use crate::message::Message;
use crate::tiers::{within, Receive};
use std::time::Duration;
use tokio::sync::oneshot;

/// What the dedicated thread hands over: a batch, or the error that ended it.
type Batch = Result<Vec<Message>, ClientError>;

/// Batches the dedicated thread may hold ready before it stops reading (backpressure).
const READY_BATCHES_MAX: usize = 8;

/// A consumer running on a dedicated thread.
pub struct DedicatedConsumer {
    /// Async and blocking receivers both (flume), so that threads outside any runtime can
    /// wait with a timeout (`poll_blocking`).
    batches: flume::Receiver<Batch>,
    acker: Acker,
    stop: Option<oneshot::Sender<()>>,
}

impl ConsumerBuilder {
    /// Starts the consumer on a dedicated thread with its own connection; batches hold up to
    /// `batch_max` messages.
    pub async fn dedicated(self, batch_max: usize) -> Result<DedicatedConsumer, ClientError> {
        let settings = (**self.client.router.settings()).clone();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Acker, ClientError>>();
        let (batches_tx, batches) = flume::bounded(READY_BATCHES_MAX);
        let (stop, stopped) = oneshot::channel::<()>();
        let builder = self;
        std::thread::Builder::new()
            .name("oxbow-consumer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ClientError::Io(std::sync::Arc::new(e))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match settings.connect().await {
                        Ok(client) => client,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let builder = ConsumerBuilder { client, ..builder };
                    let mut consumer = match builder.build().await {
                        Ok(consumer) => consumer,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(consumer.acker()));
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            batch = consumer.recv_batch(batch_max) => {
                                let ended = batch
                                    .as_ref()
                                    .is_err_and(|e| !matches!(e, ClientError::DeliveryBlocked { .. }));
                                if batches_tx.send_async(batch).await.is_err() || ended {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = consumer.close().await;
                });
            })
            .map_err(|e| ClientError::Io(std::sync::Arc::new(e)))?;
        let acker = ready_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(DedicatedConsumer {
            batches,
            acker,
            stop: Some(stop),
        })
    }
}

impl DedicatedConsumer {
    /// The next batch.
    pub async fn recv(&mut self) -> Result<Vec<Message>, ClientError> {
        self.batches
            .recv_async()
            .await
            .unwrap_or(Err(ClientError::Closed))
    }

    /// The next batch, blocking the calling thread (for code outside any runtime).
    pub fn recv_blocking(&mut self) -> Result<Vec<Message>, ClientError> {
        self.batches.recv().unwrap_or(Err(ClientError::Closed))
    }

    /// The next batch if one comes within `timeout`; `Ok(None)` if none did.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Option<Vec<Message>>, ClientError> {
        within(timeout, self.recv()).await
    }

    /// A batch the thread has ready, without waiting; `Ok(None)` if none is.
    pub fn try_poll(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        match self.batches.try_recv() {
            Ok(received) => received.map(Some),
            Err(flume::TryRecvError::Empty) => Ok(None),
            Err(flume::TryRecvError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// The next batch if one comes within `timeout`, blocking the calling thread (for code
    /// outside any runtime); `Ok(None)` if none did.
    pub fn poll_blocking(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<Message>>, ClientError> {
        match self.batches.recv_timeout(timeout) {
            Ok(received) => received.map(Some),
            Err(flume::RecvTimeoutError::Timeout) => Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// A handle that acknowledges this consumer's messages.
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }
}

impl Receive for DedicatedConsumer {
    async fn next_batch(&mut self) -> Result<Vec<Message>, ClientError> {
        self.recv().await
    }

    async fn next_batch_within(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<Message>>, ClientError> {
        self.poll(timeout).await
    }

    fn try_next_batch(&mut self) -> Result<Option<Vec<Message>>, ClientError> {
        self.try_poll()
    }

    fn acker(&self) -> Acker {
        DedicatedConsumer::acker(self)
    }
}

impl Drop for DedicatedConsumer {
    fn drop(&mut self) {
        // The thread detaches the consumer and exits on its own.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
