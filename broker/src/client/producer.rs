//! The producer: records are appended to per-partition batches (RecordBatch v2, built
//! and compressed here), which a background sender ships when they are full or have
//! lingered long enough. At most one request per partition is in flight, so retries never
//! reorder a partition.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::Shared;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cluster::{Cluster, ClusterView};
use super::error::{Error, Result};
use crate::TopicPartition;
pub use crate::metadata::Acks;
use crate::metadata::partition_for_key;
use crate::protocol::grpc::proto;
use crate::record::{BatchBuilder, Compression, HEADER_LEN};

/// How a producer batches, compresses and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `host:port[,host:port]` of brokers to ask for metadata.
    pub bootstrap: String,
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes (before compression).
    pub batch_size: usize,
    pub compression: Compression,
    /// Largest request (all batches for one partition) sent at once; no record may be larger.
    pub max_request_size: usize,
    /// Memory for records waiting to be sent; `send` waits when it is used up.
    pub buffer_memory: usize,
    pub retry_backoff: Duration,
    /// How long a record may take, retries included, before its delivery fails.
    pub delivery_timeout: Duration,
    pub request_timeout: Duration,
    /// The leader drops retried batches it already has (by producer id and sequence), so a
    /// retry, also after a leader change, never writes a record twice or out of order.
    /// Needs acks 1 or all.
    pub enable_idempotence: bool,
}

impl ProducerConfig {
    /// Kafka's defaults (acks=all, 5 ms linger, 16 KiB batches, no compression).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            compression: Compression::None,
            max_request_size: 1024 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            enable_idempotence: true,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0
            || self.max_request_size < HEADER_LEN * 2
            || self.buffer_memory < self.max_request_size
        {
            return Err(Error::Invalid(format!(
                "producer settings do not fit together: batch_size {} must be positive, max_request_size {} at least {} bytes, and buffer_memory {} at least max_request_size",
                self.batch_size,
                self.max_request_size,
                HEADER_LEN * 2,
                self.buffer_memory
            )));
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// None lets the partitioner choose: by key hash, or sticky when there is no key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; None takes the current time.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Default::default()
        }
    }
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// -1 with acks=0, which reports no offsets.
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy)]
struct BatchAck {
    base_offset: i64,
    log_append_time: Option<i64>,
}

type Outcome = Result<BatchAck>;
type SharedOutcome = Shared<oneshot::Receiver<Outcome>>;

/// Resolves when the record is acknowledged (or has failed for good).
#[must_use = "a delivery future reports whether the record was written; await it or drop it deliberately"]
pub struct DeliveryFuture {
    outcome: SharedOutcome,
    partition: u32,
    offset_delta: i32,
    timestamp: i64,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("partition", &self.partition)
            .field("offset_delta", &self.offset_delta)
            .finish()
    }
}

impl DeliveryFuture {
    /// The partition the record was assigned to.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.outcome.poll_unpin(cx).map(|outcome| match outcome {
            Ok(Ok(ack)) => Ok(RecordMetadata {
                partition: this.partition,
                offset: if ack.base_offset < 0 {
                    -1
                } else {
                    ack.base_offset + i64::from(this.offset_delta)
                },
                timestamp: ack.log_append_time.unwrap_or(this.timestamp),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Closed),
        })
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    done: oneshot::Sender<Outcome>,
    outcome: SharedOutcome,
    memory: usize,
}

struct ReadyBatch {
    bytes: Bytes,
    records: i32,
    created: Instant,
    done: oneshot::Sender<Outcome>,
    outcome: SharedOutcome,
    memory: usize,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    /// Outcomes of the batches in the request now in flight.
    in_flight: Vec<SharedOutcome>,
    sending: bool,
    retry_at: Option<Instant>,
    /// Sequence number of the next batch to close, for idempotent producers.
    next_sequence: i32,
    /// The producer id this partition's batches carry when it is not the producer's own:
    /// after a sequence gap here, this partition alone starts over with a new one.
    identity: Option<Identity>,
    /// The leader reported a sequence gap: nothing is sent until the queue is restamped.
    reset_pending: bool,
}

impl PartitionQueue {
    /// Closes the open batch; an idempotent producer stamps it with its id (`producer`,
    /// unless this partition has its own) and the partition's next sequence, so batches
    /// carry sequences in the order they are sent.
    fn close_open(&mut self, compression: Compression, producer: Option<Identity>) -> Result<()> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        let records = open.builder.record_count();
        if let Some(identity) = self.identity.or(producer) {
            open.builder
                .set_producer(identity.producer_id, identity.epoch, self.next_sequence);
            self.next_sequence = advance_sequence(self.next_sequence, records);
        }
        let bytes = match open.builder.build() {
            Ok(bytes) => bytes,
            Err(e) => {
                let error = Error::Invalid(format!(
                    "compressing a batch with {compression} failed: {e}"
                ));
                let _ = open.done.send(Err(error.clone()));
                return Err(error);
            }
        };
        self.ready.push_back(ReadyBatch {
            bytes,
            records,
            created: open.created,
            done: open.done,
            outcome: open.outcome,
            memory: open.memory,
        });
        Ok(())
    }

    fn is_idle(&self) -> bool {
        self.open.is_none() && self.ready.is_empty() && !self.sending
    }
}

#[derive(Default)]
struct TopicQueues {
    partitions: Vec<PartitionQueue>,
    /// The partition keyless records go to, and whether a record has gone there yet.
    sticky: Option<(u32, bool)>,
}

/// An idempotent producer's id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    producer_id: i64,
    epoch: i16,
}

/// The sequence `count` records after `seq`; sequences wrap from i32::MAX to 0.
fn advance_sequence(seq: i32, count: i32) -> i32 {
    ((i64::from(seq) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Default)]
struct Accumulator {
    topics: HashMap<String, TopicQueues>,
    /// While positive, open batches are sent at once instead of lingering.
    flushing: usize,
    identity: Option<Identity>,
}

struct Inner {
    config: ProducerConfig,
    cluster: Cluster,
    accumulator: Mutex<Accumulator>,
    wake: Notify,
    memory: Semaphore,
    closed: AtomicBool,
}

/// Sends records to a Tributary cluster. Cheap to share behind an `Arc`; `send` takes `&self`.
pub struct Producer {
    inner: Arc<Inner>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish()
    }
}

struct Job {
    tp: TopicPartition,
    batches: Vec<ReadyBatch>,
}

impl Producer {
    /// Creates a producer and checks that the cluster answers.
    pub async fn connect(config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let cluster = Cluster::new(&config.bootstrap, config.request_timeout)?;
        cluster.refresh().await?;
        let identity = if config.enable_idempotence && config.acks != Acks::None {
            Some(init_producer_id(&cluster).await?)
        } else {
            None
        };
        let memory = Semaphore::new(config.buffer_memory);
        let inner = Arc::new(Inner {
            config,
            cluster,
            accumulator: Mutex::new(Accumulator {
                identity,
                ..Accumulator::default()
            }),
            wake: Notify::new(),
            memory,
            closed: AtomicBool::new(false),
        });
        let sender = tokio::spawn(run_sender(inner.clone()));
        Ok(Self {
            inner,
            sender: Mutex::new(Some(sender)),
        })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Queues a record and returns a future for its acknowledgement. Waits only when the
    /// buffer memory is full (until batches are acknowledged) or for the topic's metadata.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let partitions = inner.cluster.partition_count(&record.topic).await?;
        if let Some(p) = record.partition.filter(|&p| p >= partitions) {
            return Err(Error::Invalid(format!(
                "topic '{}' has no partition {p}: it has partitions 0 to {}",
                record.topic,
                partitions - 1
            )));
        }
        let timestamp = record.timestamp.unwrap_or_else(crate::now_ms);
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let (key, value) = (record.key.as_deref(), record.value.as_deref());
        let size = BatchBuilder::max_record_size(key, value, &headers);
        if size + HEADER_LEN > inner.config.max_request_size {
            return Err(Error::Invalid(format!(
                "record of {} bytes is larger than max_request_size ({} bytes)",
                size + HEADER_LEN,
                inner.config.max_request_size
            )));
        }
        match inner.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(_) => inner
                .memory
                .acquire_many(size as u32)
                .await
                .map_err(|_| Error::Closed)?
                .forget(),
        }

        let mut accumulator = inner.accumulator.lock();
        let identity = accumulator.identity;
        let topic = match accumulator.topics.get_mut(&record.topic) {
            Some(topic) => topic,
            None => accumulator.topics.entry(record.topic.clone()).or_default(),
        };
        if topic.partitions.len() < partitions as usize {
            topic
                .partitions
                .resize_with(partitions as usize, PartitionQueue::default);
        }
        let mut partition = match (record.partition, key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => sticky_partition(topic, partitions),
        };
        let config = &inner.config;
        // A record that does not fit closes the open batch; a keyless one then moves on to
        // the next sticky partition, like every record after a batch is full.
        for _ in 0..2 {
            let queue = &mut topic.partitions[partition as usize];
            let Some(open) = &queue.open else { break };
            if open.builder.uncompressed_size() + size <= config.batch_size {
                break;
            }
            queue.close_open(config.compression, identity)?;
            inner.wake.notify_one();
            if record.partition.is_some() || key.is_some() {
                break;
            }
            partition = sticky_partition(topic, partitions);
        }
        let queue = &mut topic.partitions[partition as usize];
        let open = queue.open.get_or_insert_with(|| {
            let (done, outcome) = oneshot::channel();
            inner.wake.notify_one();
            OpenBatch {
                builder: BatchBuilder::new(
                    config.compression,
                    config.batch_size.min(config.max_request_size) + HEADER_LEN,
                ),
                created: Instant::now(),
                done,
                outcome: outcome.shared(),
                memory: 0,
            }
        });
        let offset_delta = open.builder.append(timestamp, key, value, &headers);
        open.memory += size;
        let future = DeliveryFuture {
            outcome: open.outcome.clone(),
            partition,
            offset_delta,
            timestamp,
        };
        if open.builder.uncompressed_size() >= config.batch_size {
            queue.close_open(config.compression, identity)?;
            inner.wake.notify_one();
        }
        Ok(future)
    }

    /// Sends everything queued now and waits until it is acknowledged or has failed.
    pub async fn flush(&self) {
        let pending: Vec<SharedOutcome> = {
            let mut accumulator = self.inner.accumulator.lock();
            accumulator.flushing += 1;
            accumulator
                .topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .flat_map(|q| {
                    q.open
                        .iter()
                        .map(|b| b.outcome.clone())
                        .chain(q.ready.iter().map(|b| b.outcome.clone()))
                        .chain(q.in_flight.iter().cloned())
                })
                .collect()
        };
        self.inner.wake.notify_one();
        for outcome in pending {
            let _ = outcome.await;
        }
        self.inner.accumulator.lock().flushing -= 1;
    }

    /// Flushes, then stops the sender. Later sends fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let sender = self.sender.lock().take();
        if let Some(sender) = sender {
            let _ = sender.await;
        }
    }
}

impl Drop for Producer {
    /// Records already queued are still sent; call `close` to wait for them.
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

/// KIP-480: keyless records stay on one partition until its batch is closed, then move.
fn sticky_partition(topic: &mut TopicQueues, partitions: u32) -> u32 {
    match topic.sticky {
        Some((p, fresh))
            if p < partitions && (fresh || topic.partitions[p as usize].open.is_some()) =>
        {
            topic.sticky = Some((p, false));
            p
        }
        previous => {
            let mut next = rand::random_range(0..partitions);
            if let Some((old, _)) = previous
                && partitions > 1
                && next == old
            {
                next = (next + 1) % partitions;
            }
            topic.sticky = Some((next, false));
            next
        }
    }
}

impl Inner {
    /// Closes batches that have lingered long enough and takes the requests that can go now;
    /// returns them with the next time something will be due.
    fn take_due(&self, now: Instant) -> (Vec<Job>, Option<Instant>) {
        let mut accumulator = self.accumulator.lock();
        let force = accumulator.flushing > 0 || self.closed.load(Ordering::Acquire);
        let identity = accumulator.identity;
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        let mut due = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        for (topic, queues) in &mut accumulator.topics {
            for (partition, queue) in queues.partitions.iter_mut().enumerate() {
                if let Some(open) = &queue.open {
                    let expires = open.created + self.config.linger;
                    if force || now >= expires {
                        // A compression failure has already failed the batch's records.
                        let _ = queue.close_open(self.config.compression, identity);
                    } else {
                        due(expires);
                    }
                }
                if queue.sending || queue.ready.is_empty() || queue.reset_pending {
                    continue;
                }
                if let Some(at) = queue.retry_at.filter(|&at| at > now) {
                    due(at);
                    continue;
                }
                let mut size = 0;
                let mut batches = Vec::new();
                while let Some(batch) = queue.ready.front() {
                    if !batches.is_empty()
                        && size + batch.bytes.len() > self.config.max_request_size
                    {
                        break;
                    }
                    size += batch.bytes.len();
                    batches.push(queue.ready.pop_front().expect("front exists"));
                }
                queue.sending = true;
                queue.retry_at = None;
                queue.in_flight = batches.iter().map(|b| b.outcome.clone()).collect();
                jobs.push(Job {
                    tp: TopicPartition::new(topic.clone(), partition as u32),
                    batches,
                });
            }
        }
        (jobs, next)
    }

    fn is_drained(&self) -> bool {
        self.accumulator
            .lock()
            .topics
            .values()
            .all(|t| t.partitions.iter().all(PartitionQueue::is_idle))
    }

    /// Ends a request: completed batches give back their memory; batches to retry go back to
    /// the front of their queue, in order, and are sent again after `retry_after`. `reset`
    /// asks for a new producer id for the partition first.
    fn finish(
        &self,
        tp: &TopicPartition,
        retry: Vec<ReadyBatch>,
        released: usize,
        reset: bool,
        retry_after: Duration,
    ) {
        self.memory.add_permits(released);
        let mut accumulator = self.accumulator.lock();
        let idempotent = accumulator.identity.is_some();
        if let Some(queue) = accumulator
            .topics
            .get_mut(&tp.topic)
            .and_then(|t| t.partitions.get_mut(tp.partition as usize))
        {
            queue.sending = false;
            queue.in_flight.clear();
            queue.reset_pending |= reset && idempotent;
            if !retry.is_empty() {
                queue.retry_at = Some(Instant::now() + retry_after);
                for batch in retry.into_iter().rev() {
                    queue.ready.push_front(batch);
                }
            }
        }
        drop(accumulator);
        self.wake.notify_one();
    }

    /// Whether a partition waits for a new producer id after a sequence gap.
    fn reset_due(&self) -> bool {
        let accumulator = self.accumulator.lock();
        accumulator.identity.is_some()
            && accumulator
                .topics
                .values()
                .any(|t| t.partitions.iter().any(|q| q.reset_pending))
    }

    /// Takes a new producer id for the partitions that saw a sequence gap.
    async fn reset_producer_id(&self) -> Result<()> {
        let identity = init_producer_id(&self.cluster).await?;
        let restarted = restart_sequences(&mut self.accumulator.lock(), identity);
        tracing::info!(
            producer_id = identity.producer_id,
            partitions = restarted,
            "started over with a new producer id after a sequence gap"
        );
        Ok(())
    }
}

/// Gives every partition waiting for a reset the producer id `identity` and restamps its
/// queued batches with it, sequences starting again at 0 in queue order; returns how many
/// partitions started over. None of those batches is in the log: the leader refused the
/// request with the gap, and a partition sends one request at a time. Other partitions
/// keep their id and sequences, so a retry there is still recognized as one.
fn restart_sequences(accumulator: &mut Accumulator, identity: Identity) -> usize {
    let mut restarted = 0;
    for queue in accumulator
        .topics
        .values_mut()
        .flat_map(|t| t.partitions.iter_mut())
        .filter(|q| q.reset_pending)
    {
        let mut sequence = 0;
        for batch in &mut queue.ready {
            let mut bytes = batch.bytes.to_vec();
            crate::record::set_producer(&mut bytes, identity.producer_id, identity.epoch, sequence);
            batch.bytes = Bytes::from(bytes);
            sequence = advance_sequence(sequence, batch.records);
        }
        queue.next_sequence = sequence;
        queue.identity = Some(identity);
        queue.reset_pending = false;
        restarted += 1;
    }
    restarted
}

async fn init_producer_id(cluster: &Cluster) -> Result<Identity> {
    let response = cluster
        .with_any_broker(|address| async move {
            let mut client = cluster.broker_client(&address)?;
            client
                .init_producer_id(proto::InitProducerIdRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|s| Error::from_status(s, &address))
        })
        .await?;
    Ok(Identity {
        producer_id: response.producer_id,
        epoch: response.producer_epoch as i16,
    })
}

async fn run_sender(inner: Arc<Inner>) {
    loop {
        if inner.reset_due()
            && let Err(error) = inner.reset_producer_id().await
        {
            tracing::warn!(%error, "could not get a new producer id; retrying");
            tokio::time::sleep(inner.config.retry_backoff).await;
            continue;
        }
        let (jobs, next) = inner.take_due(Instant::now());
        for job in jobs {
            tokio::spawn(send(inner.clone(), job));
        }
        if inner.closed.load(Ordering::Acquire) && inner.is_drained() {
            return;
        }
        let woken = inner.wake.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => woken.await,
        }
    }
}

async fn produce_once(
    inner: &Inner,
    view: &ClusterView,
    tp: &TopicPartition,
    records: Bytes,
) -> Result<proto::ProduceResponse> {
    let leader = view.leader(tp)?;
    let mut client = inner.cluster.broker_client(&leader)?;
    let request = proto::ProduceRequest {
        topic: tp.topic.clone(),
        partition: tp.partition,
        acks: match inner.config.acks {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        },
        timeout_ms: inner
            .config
            .request_timeout
            .as_millis()
            .min(u128::from(u32::MAX)) as u32,
        records,
    };
    let call = client.produce(request);
    match tokio::time::timeout(inner.config.request_timeout + Duration::from_secs(1), call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => {
            let error = Error::from_status(status, &leader);
            if matches!(error, Error::Connection { .. }) {
                inner.cluster.reset(&leader);
            }
            Err(error)
        }
        Err(_) => Err(Error::Timeout {
            what: format!("produce to {tp} at {leader}"),
            waited_ms: inner.config.request_timeout.as_millis() as u64,
        }),
    }
}

async fn send(inner: Arc<Inner>, job: Job) {
    let Job { tp, batches } = job;
    let records = match batches.as_slice() {
        [one] => one.bytes.clone(),
        many => {
            let mut joined = BytesMut::with_capacity(many.iter().map(|b| b.bytes.len()).sum());
            for batch in many {
                joined.extend_from_slice(&batch.bytes);
            }
            joined.freeze()
        }
    };
    let epoch_of = |view: &ClusterView| view.partition(&tp).map(|p| (p.leader_epoch, p.leader));
    // The leader epoch the request went out at, to tell a moved leader after an error.
    let (sent_at, result) = match inner.cluster.view().await {
        Ok(view) => (
            epoch_of(&view),
            produce_once(&inner, &view, &tp, records).await,
        ),
        Err(error) => (None, Err(error)),
    };
    let mut released = 0;
    let mut retry = Vec::new();
    let mut reset = false;
    let mut retry_after = inner.config.retry_backoff;
    match result {
        Ok(response) => {
            let mut base = response.base_offset;
            let log_append_time =
                (response.log_append_time_ms >= 0).then_some(response.log_append_time_ms);
            // The leader says where each batch is (a retried one keeps its old offsets).
            let per_batch = response.batch_base_offsets.len() == batches.len();
            for (i, batch) in batches.into_iter().enumerate() {
                released += batch.memory;
                let base_offset = if per_batch {
                    response.batch_base_offsets[i]
                } else {
                    base
                };
                let _ = batch.done.send(Ok(BatchAck {
                    base_offset,
                    log_append_time,
                }));
                if base >= 0 {
                    base += i64::from(batch.records);
                }
            }
        }
        Err(error) => {
            // A leader that moved on is retried at once, at the new leader (as Kafka clients
            // do since KIP-951); anything else waits the backoff.
            if error.needs_metadata_refresh()
                && let Ok(after) = inner.cluster.refresh().await
                && let Some((after_epoch, leader)) = epoch_of(&after)
            {
                let moved = sent_at.is_none_or(|(sent_epoch, _)| after_epoch > sent_epoch);
                if moved && leader >= 0 {
                    retry_after = Duration::ZERO;
                }
            }
            // A sequence gap: the leader lost batches it had acknowledged (acks=1 and a leader
            // change) or its producer state. Start over with a new producer id and resend.
            reset =
                error.code() == Some(crate::protocol::grpc::proto::ErrorCode::OutOfOrderSequence);
            let now = Instant::now();
            for batch in batches {
                let expired = now.duration_since(batch.created) >= inner.config.delivery_timeout;
                if (error.is_retriable() || reset)
                    && !expired
                    && !inner.closed.load(Ordering::Acquire)
                {
                    retry.push(batch);
                } else {
                    released += batch.memory;
                    let error = if expired {
                        Error::Timeout {
                            what: format!("delivering records to {tp} (last error: {error})"),
                            waited_ms: inner.config.delivery_timeout.as_millis() as u64,
                        }
                    } else {
                        error.clone()
                    };
                    let _ = batch.done.send(Err(error));
                }
            }
            if !retry.is_empty() {
                tracing::debug!(partition = %tp, %error, "produce failed; will retry");
            }
        }
    }
    inner.finish(&tp, retry, released, reset, retry_after);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BatchHeader, validate_produced};

    /// Closes a batch of `records` records on `queue`, for an idempotent `producer`.
    fn push(queue: &mut PartitionQueue, producer: Identity, records: usize) {
        let (done, outcome) = oneshot::channel();
        let mut builder = BatchBuilder::new(Compression::None, 1 << 16);
        for i in 0..records {
            builder.append(0, None, Some(format!("r{i}").as_bytes()), &[]);
        }
        queue.open = Some(OpenBatch {
            builder,
            created: Instant::now(),
            done,
            outcome: outcome.shared(),
            memory: 0,
        });
        queue.close_open(Compression::None, Some(producer)).unwrap();
    }

    /// (producer id, base sequence) of each queued batch, checked whole (CRC included),
    /// and the queue's next sequence.
    fn stamps(queue: &PartitionQueue) -> (Vec<(i64, i32)>, i32) {
        let stamps = queue
            .ready
            .iter()
            .map(|b| {
                validate_produced(&b.bytes, usize::MAX).unwrap();
                let header = BatchHeader::parse(&b.bytes).unwrap();
                (header.producer_id(), header.base_sequence())
            })
            .collect();
        (stamps, queue.next_sequence)
    }

    #[test]
    fn a_sequence_gap_restarts_only_its_own_partition_with_a_new_producer_id() {
        let old = Identity {
            producer_id: 7,
            epoch: 0,
        };
        let new = Identity {
            producer_id: 8,
            epoch: 0,
        };
        let mut accumulator = Accumulator {
            identity: Some(old),
            ..Accumulator::default()
        };
        let (mut gap, mut other) = (PartitionQueue::default(), PartitionQueue::default());
        // Partition 0 had written sequences 0..40; the leader lost them and refuses 40.
        gap.next_sequence = 40;
        // Partition 1's batches wait for a retry after a lost answer: they may be in the
        // log, so they must keep their id and sequences.
        for _ in 0..2 {
            push(&mut gap, old, 3);
            push(&mut other, old, 3);
        }
        gap.reset_pending = true;
        accumulator.topics.entry("t".into()).or_default().partitions = vec![gap, other];

        assert_eq!(restart_sequences(&mut accumulator, new), 1);
        let partitions = &mut accumulator.topics.get_mut("t").unwrap().partitions;
        assert_eq!(stamps(&partitions[0]), (vec![(8, 0), (8, 3)], 6));
        assert_eq!(stamps(&partitions[1]), (vec![(7, 0), (7, 3)], 6));
        assert!(!partitions[0].reset_pending);

        // Batches closed later carry each partition's own id.
        for queue in partitions.iter_mut() {
            push(queue, old, 1);
        }
        assert_eq!(stamps(&partitions[0]).0[2], (8, 6));
        assert_eq!(stamps(&partitions[1]).0[2], (7, 6));
    }

    #[test]
    fn sequences_advance_by_the_record_count_and_wrap_to_zero() {
        assert_eq!(advance_sequence(0, 5), 5);
        assert_eq!(advance_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(advance_sequence(i32::MAX, 1), 0);
        assert_eq!(advance_sequence(i32::MAX - 2, 5), 2);
    }
}
