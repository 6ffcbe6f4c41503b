//! Followers copy from leaders: one task and one long-poll stream per leader broker,
//! carrying every partition this broker follows there.
//!
//! Each fetch says where the follower's log ends and the epoch of its last batch; when the
//! leader answers that the logs diverge, the follower truncates to the point they share and
//! fetches from there (KIP-595). A follower behind the leader's log start starts over there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::partition::FetchedFrom;
use super::throttle::Throttle;
use super::{Partition, ReplicaError, ReplicationConfig};
use crate::TopicPartition;
use crate::metadata::BrokerInfo;
use crate::protocol::grpc::proto::{self, ErrorCode};
use crate::protocol::grpc::transport::{self, MAX_MESSAGE_BYTES};

/// How long a partition waits before it is fetched again after the leader refused it:
/// leadership moved, and this broker learns where to soon.
const REFUSED_WAIT: Duration = Duration::from_millis(300);
/// The first wait after the leader said it has not yet heard of the partition or its
/// epoch; each such answer in a row doubles it, up to `REFUSED_WAIT`.
const LEADER_BEHIND_FIRST_WAIT: Duration = Duration::from_millis(5);

enum Command {
    Follow(Arc<Partition>),
    Unfollow(TopicPartition),
}

struct Fetcher {
    address: String,
    commands: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
}

/// The fetchers of one broker, by leader.
pub(super) struct Fetchers {
    broker_id: i32,
    config: ReplicationConfig,
    shutdown: CancellationToken,
    by_leader: HashMap<i32, Fetcher>,
    following: HashMap<TopicPartition, (i32, Arc<Partition>)>,
    /// Shared by every fetcher: the rate of replicas catching up.
    throttle: Option<Arc<Throttle>>,
}

impl Fetchers {
    pub fn new(broker_id: i32, config: ReplicationConfig, shutdown: CancellationToken) -> Self {
        Self {
            broker_id,
            throttle: config
                .catch_up_throttle
                .map(|rate| Arc::new(Throttle::new(rate))),
            config,
            shutdown,
            by_leader: HashMap::new(),
            following: HashMap::new(),
        }
    }

    fn spawn(&self, leader: i32, address: String) -> Fetcher {
        let (commands, receiver) = mpsc::unbounded_channel();
        let stop = self.shutdown.child_token();
        tokio::spawn(run(
            self.broker_id,
            leader,
            address.clone(),
            self.config.clone(),
            self.throttle.clone(),
            receiver,
            stop.clone(),
        ));
        Fetcher {
            address,
            commands,
            stop,
        }
    }

    /// Copies `partition` from `leader` (at `address`). `new_epoch` asks for the follower's
    /// log to be checked against the leader's again.
    pub fn follow(
        &mut self,
        partition: Arc<Partition>,
        leader: i32,
        address: String,
        new_epoch: bool,
    ) {
        let tp = partition.topic_partition().clone();
        let previous = self.following.get(&tp).map(|(l, _)| *l);
        if previous.is_some_and(|l| l != leader) {
            self.remove(&tp);
        }
        // A fetcher whose task ended (it panicked) is replaced, not left silent.
        if self
            .by_leader
            .get(&leader)
            .is_none_or(|f| f.address != address || f.commands.is_closed())
        {
            self.replace_fetcher(leader, address);
        }
        if new_epoch || previous != Some(leader) {
            let _ = self.by_leader[&leader]
                .commands
                .send(Command::Follow(partition.clone()));
        }
        self.following.insert(tp, (leader, partition));
    }

    /// Stops copying `tp`.
    pub fn remove(&mut self, tp: &TopicPartition) {
        if let Some((leader, _)) = self.following.remove(tp)
            && let Some(fetcher) = self.by_leader.get(&leader)
        {
            let _ = fetcher.commands.send(Command::Unfollow(tp.clone()));
            if !self.following.values().any(|(l, _)| *l == leader) {
                fetcher.stop.cancel();
                self.by_leader.remove(&leader);
            }
        }
    }

    /// Leaders that moved (restarted with another address) get a fresh fetcher.
    pub fn reconnect_moved_leaders(&mut self, brokers: &BTreeMap<i32, BrokerInfo>) {
        let moved: Vec<(i32, String)> = self
            .by_leader
            .iter()
            .filter_map(|(leader, f)| {
                brokers
                    .get(leader)
                    .map(|b| b.address())
                    .filter(|a| *a != f.address)
                    .map(|a| (*leader, a))
            })
            .collect();
        for (leader, address) in moved {
            self.replace_fetcher(leader, address);
        }
    }

    fn replace_fetcher(&mut self, leader: i32, address: String) {
        if let Some(old) = self.by_leader.remove(&leader) {
            old.stop.cancel();
        }
        let fetcher = self.spawn(leader, address);
        for (l, partition) in self.following.values() {
            if *l == leader {
                let _ = fetcher.commands.send(Command::Follow(partition.clone()));
            }
        }
        self.by_leader.insert(leader, fetcher);
    }
}

struct Following {
    partition: Arc<Partition>,
    paused_until: Option<Instant>,
    /// Answers in a row saying the leader has not yet heard of this partition or its
    /// epoch; the follower asks again after a wait that doubles with each.
    leader_behind: u32,
}

type Stream = (
    mpsc::Sender<proto::ReplicaFetchRequest>,
    tonic::Streaming<proto::ReplicaFetchResponse>,
);

async fn connect(address: &str) -> Result<Stream, String> {
    let channel: Channel = transport::endpoint(address)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = proto::replication_client::ReplicationClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (requests, outgoing) = mpsc::channel(1);
    let responses = client
        .replica_fetch(ReceiverStream::new(outgoing))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    Ok((requests, responses))
}

async fn run(
    broker_id: i32,
    leader: i32,
    address: String,
    config: ReplicationConfig,
    throttle: Option<Arc<Throttle>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: CancellationToken,
) {
    let mut partitions: HashMap<TopicPartition, Following> = HashMap::new();
    let mut stream: Option<Stream> = None;
    let mut backoff = Duration::from_millis(100);
    // Which catching-up partition goes first in the next fetch, so they take turns.
    let mut turn = 0usize;
    tracing::debug!(leader, %address, "fetcher started");
    loop {
        while let Ok(command) = commands.try_recv() {
            apply(&mut partitions, command);
        }
        if stop.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let active = fetch_now(
            &partitions,
            broker_id,
            now,
            &config,
            throttle.as_deref(),
            turn,
        );
        turn = turn.wrapping_add(1);
        if active.is_empty() {
            let wake = partitions
                .values()
                .filter_map(|f| f.paused_until)
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => apply(&mut partitions, command),
                    None => return,
                },
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(wake) => {}
            }
            continue;
        }
        // The epoch each partition is fetched at: its answer applies only at that epoch.
        let mut epochs: HashMap<TopicPartition, i32> = HashMap::new();
        // A paused partition is fetched again when its pause ends, so the long poll must not
        // outlast it.
        let max_wait = partitions
            .values()
            .filter_map(|f| f.paused_until)
            .filter(|&until| until > now)
            .map(|until| until - now)
            .fold(config.fetch_max_wait, Duration::min);
        let request = proto::ReplicaFetchRequest {
            replica_id: broker_id,
            max_wait_ms: max_wait.as_micros().div_ceil(1000) as u32,
            min_bytes: 1,
            max_bytes: config.fetch_max_bytes as u32,
            partitions: active
                .iter()
                .map(|(f, max_bytes)| {
                    let log = f.partition.log();
                    let tp = f.partition.topic_partition();
                    let epoch = f.partition.leader_epoch();
                    epochs.insert(tp.clone(), epoch);
                    proto::ReplicaFetchPartition {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        fetch_offset: log.log_end_offset(),
                        current_leader_epoch: epoch,
                        last_fetched_epoch: log.latest_epoch().map_or(-1, |e| e.epoch),
                        max_bytes: *max_bytes as u32,
                        high_watermark: f.partition.high_watermark(),
                    }
                })
                .collect(),
        };
        if stream.is_none() {
            match tokio::select! { result = connect(&address) => result, () = stop.cancelled() => return }
            {
                Ok(connected) => stream = Some(connected),
                Err(error) => {
                    tracing::debug!(leader, %address, %error, "cannot reach the leader; retrying");
                    tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let Some((requests, responses)) = stream.as_mut() else {
            continue;
        };
        let answer = async {
            requests
                .send(request)
                .await
                .map_err(|_| "the stream closed".to_string())?;
            match responses.message().await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err("the leader ended the stream".to_string()),
                Err(status) => Err(status.message().to_string()),
            }
        };
        let wait = config.fetch_max_wait + Duration::from_secs(15);
        let result = tokio::select! {
            result = tokio::time::timeout(wait, answer) => result.unwrap_or_else(|_| Err("no answer in time".into())),
            () = stop.cancelled() => return,
        };
        match result {
            Ok(response) => {
                backoff = Duration::from_millis(100);
                for answer in response.partitions {
                    let tp = TopicPartition::new(answer.topic.clone(), answer.partition);
                    if let (Some(following), Some(&epoch)) =
                        (partitions.get_mut(&tp), epochs.get(&tp))
                    {
                        let catching_up = !following.partition.in_sync(broker_id);
                        let bytes = answer.records.len();
                        handle(following, FetchedFrom { leader, epoch }, answer);
                        if let Some(throttle) = throttle.as_ref().filter(|_| catching_up) {
                            let wait = throttle.take(bytes);
                            if !wait.is_zero() {
                                let until = Instant::now() + wait;
                                following.paused_until =
                                    Some(following.paused_until.map_or(until, |p| p.max(until)));
                            }
                        }
                    }
                }
            }
            Err(error) => {
                tracing::debug!(leader, %address, %error, "replica fetch failed; reconnecting");
                stream = None;
                tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The partitions to fetch now, each with the most it may ask for: every in-sync one, and
/// catching-up ones (not paused by the throttle) in turn, starting at `turn`, until
/// `catch_up_fetch_max_bytes` is spent (at least one, so a copy always moves on). Without a
/// throttle (moves are meant to stay in the background when one is set) and with no
/// in-sync partition to hold back, catching-up ones may take a whole fetch: a broker
/// rebuilding after losing its disk catches up at full speed.
fn fetch_now<'a>(
    partitions: &'a HashMap<TopicPartition, Following>,
    broker_id: i32,
    now: Instant,
    config: &ReplicationConfig,
    throttle: Option<&Throttle>,
    turn: usize,
) -> Vec<(&'a Following, usize)> {
    let mut in_sync = Vec::new();
    let mut catching_up = Vec::new();
    for f in partitions.values() {
        if f.paused_until.is_some_and(|t| t > now) {
            continue;
        }
        if f.partition.in_sync(broker_id) {
            in_sync.push((f, config.partition_fetch_max_bytes));
        } else {
            catching_up.push(f);
        }
    }
    catching_up.sort_by(|a, b| {
        a.partition
            .topic_partition()
            .cmp(b.partition.topic_partition())
    });
    if !catching_up.is_empty() {
        let start = turn % catching_up.len();
        catching_up.rotate_left(start);
    }
    let per_partition = throttle.map_or(config.partition_fetch_max_bytes, |t| {
        t.fetch_limit(config.partition_fetch_max_bytes)
    });
    let mut budget = if in_sync.is_empty() && throttle.is_none() {
        config.fetch_max_bytes
    } else {
        config.catch_up_fetch_max_bytes
    };
    for (i, f) in catching_up.into_iter().enumerate() {
        if budget == 0 && i > 0 {
            break;
        }
        let max_bytes = per_partition.min(budget.max(1));
        budget = budget.saturating_sub(max_bytes);
        in_sync.push((f, max_bytes));
    }
    in_sync
}

fn apply(partitions: &mut HashMap<TopicPartition, Following>, command: Command) {
    match command {
        Command::Follow(partition) => {
            partitions.insert(
                partition.topic_partition().clone(),
                Following {
                    partition,
                    paused_until: None,
                    leader_behind: 0,
                },
            );
        }
        Command::Unfollow(tp) => {
            partitions.remove(&tp);
        }
    }
}

/// Applies the leader's answer for one partition.
fn handle(following: &mut Following, from: FetchedFrom, answer: proto::ReplicaFetchedPartition) {
    let partition = &following.partition;
    let tp = partition.topic_partition().clone();
    let pause = |following: &mut Following, for_: Duration| {
        following.paused_until = Some(Instant::now() + for_)
    };
    let leader_behind = std::mem::take(&mut following.leader_behind);
    if let Some(diverging) = answer.diverging_epoch {
        let log = partition.log();
        // Where both logs agree: the end of that epoch in the leader's log and in this one.
        let own_end = log
            .epoch_end_offset(diverging.epoch)
            .map_or(log.log_start_offset(), |(_, end)| end);
        let target = diverging.end_offset.min(own_end);
        tracing::info!(partition = %tp, epoch = diverging.epoch, leader_end = diverging.end_offset, truncate_to = target, "log diverges from the leader's; truncating");
        match partition.truncate_to(from, target) {
            Ok(()) => {}
            Err(error @ ReplicaError::StaleFetch { .. }) => {
                tracing::debug!(partition = %tp, %error, "dropped a stale answer");
            }
            Err(error) => {
                tracing::error!(partition = %tp, %error, "could not truncate to the leader's log");
                pause(following, Duration::from_secs(1));
            }
        }
        return;
    }
    let code = ErrorCode::try_from(answer.error_code).unwrap_or(ErrorCode::Unknown);
    let result = match code {
        // The follower's log starts where the leader's does (retention there, or the
        // offsets coordinator compacting its log).
        ErrorCode::None => partition
            .append_as_follower(
                from,
                &answer.records,
                answer.high_watermark,
                crate::now_ms(),
            )
            .and_then(|()| {
                partition
                    .log()
                    .advance_log_start(answer.log_start_offset)
                    .map_err(ReplicaError::Log)
            }),
        ErrorCode::OffsetOutOfRange => {
            let leo = partition.log().log_end_offset();
            if leo < answer.log_start_offset {
                tracing::info!(partition = %tp, leader_log_start = answer.log_start_offset, "behind the leader's log start; starting over there");
                partition.reset_to(from, answer.log_start_offset)
            } else if leo > answer.log_end_offset && answer.log_end_offset >= 0 {
                partition.truncate_to(from, answer.log_end_offset)
            } else {
                pause(following, Duration::from_millis(500));
                Ok(())
            }
        }
        // The controller told this broker of the partition or its epoch before the leader:
        // the leader hears of it within moments, and acks=all producers wait until then.
        ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownLeaderEpoch => {
            tracing::debug!(partition = %tp, error = %answer.error_message, "the leader is behind on metadata");
            let wait = LEADER_BEHIND_FIRST_WAIT
                .saturating_mul(1 << leader_behind.min(8))
                .min(REFUSED_WAIT);
            following.leader_behind = leader_behind.saturating_add(1);
            pause(following, wait);
            return;
        }
        _ => {
            // Leadership moved: wait for the new metadata to settle.
            tracing::debug!(partition = %tp, error = %answer.error_message, "leader refused the fetch");
            pause(following, REFUSED_WAIT);
            Ok(())
        }
    };
    match result {
        Ok(()) => {}
        Err(error @ ReplicaError::StaleFetch { .. }) => {
            tracing::debug!(partition = %tp, %error, "dropped a stale answer");
        }
        Err(error) => {
            tracing::warn!(partition = %tp, %error, "could not apply the leader's data");
            pause(following, Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicConfig;
    use crate::log::{Log, LogConfig};
    use crate::metadata::PartitionRecord;

    /// A replica on broker 2 of partition `name`-0 led by broker 1, in the ISR or not.
    fn following(dir: &std::path::Path, name: &str, in_sync: bool) -> (TopicPartition, Following) {
        let tp = TopicPartition::new(name, 0);
        let (log, _) = Log::open(
            &dir.join(name),
            tp.clone(),
            LogConfig::default(),
            true,
            (None, None),
        )
        .expect("open the log");
        let partition = Partition::new(tp.clone(), uuid::Uuid::new_v4(), 2, Arc::new(log), None);
        let isr = if in_sync { vec![1, 2] } else { vec![1] };
        let record = PartitionRecord {
            replicas: vec![1, 2],
            isr,
            leader: 1,
            leader_epoch: 1,
            partition_epoch: 1,
        };
        partition
            .apply(&record, &TopicConfig::default())
            .expect("a follower");
        let f = Following {
            partition: Arc::new(partition),
            paused_until: None,
            leader_behind: 0,
        };
        (tp, f)
    }

    fn fetched(
        partitions: &HashMap<TopicPartition, Following>,
        throttle: Option<&Throttle>,
        turn: usize,
    ) -> Vec<(String, usize)> {
        let config = ReplicationConfig::default();
        let mut asked: Vec<(String, usize)> =
            fetch_now(partitions, 2, Instant::now(), &config, throttle, turn)
                .into_iter()
                .map(|(f, max)| (f.partition.topic_partition().topic.clone(), max))
                .collect();
        asked.sort();
        asked
    }

    #[test]
    fn catching_up_replicas_take_turns_at_a_share_of_the_fetch_and_in_sync_ones_are_never_capped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mib = 1024 * 1024;
        let mut partitions: HashMap<TopicPartition, Following> = ["b", "c", "d"]
            .into_iter()
            .map(|name| following(dir.path(), name, false))
            .collect();
        let (tp, in_sync) = following(dir.path(), "a", true);
        partitions.insert(tp.clone(), in_sync);

        // With an in-sync replica on the stream, one catching-up replica per fetch, in turn.
        for (turn, expected) in [(0, "b"), (1, "c"), (2, "d"), (3, "b")] {
            assert_eq!(
                fetched(&partitions, None, turn),
                [("a".to_string(), mib), (expected.to_string(), mib)],
                "turn {turn}"
            );
        }
        // Only catching-up replicas, no throttle (a rebuild): they take the whole fetch.
        let in_sync = partitions.remove(&tp).expect("present");
        assert_eq!(fetched(&partitions, None, 0).len(), 3);
        // With a throttle, moves stay fine-grained even alone on the stream.
        let throttle = Throttle::new(64 * 1000 * 1000);
        assert_eq!(
            fetched(&partitions, Some(&throttle), 1),
            [("c".to_string(), mib)]
        );
        // A paused replica sits its turn out.
        partitions.insert(tp.clone(), in_sync);
        let c = TopicPartition::new("c", 0);
        if let Some(f) = partitions.get_mut(&c) {
            f.paused_until = Some(Instant::now() + Duration::from_secs(60));
        }
        assert_eq!(
            fetched(&partitions, None, 1),
            [("a".to_string(), mib), ("d".to_string(), mib)]
        );
    }

    fn refusal(code: ErrorCode) -> proto::ReplicaFetchedPartition {
        proto::ReplicaFetchedPartition {
            topic: "a".into(),
            partition: 0,
            error_code: code.into(),
            error_message: "refused".into(),
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            diverging_epoch: None,
            records: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_leader_behind_on_metadata_is_asked_again_soon_and_a_moved_leader_later() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (_, mut f) = following(dir.path(), "a", true);
        let from = FetchedFrom {
            leader: 1,
            epoch: 1,
        };
        // The pause an answer sets off, as bounds: at least the first, at most the second.
        let mut pause_after = |code: ErrorCode| {
            let before = Instant::now();
            handle(&mut f, from, refusal(code));
            let until = f.paused_until.expect("paused");
            (until - before, until - Instant::now(), f.leader_behind)
        };
        // Each "not heard of it yet" in a row doubles the wait, from a few milliseconds.
        let first = LEADER_BEHIND_FIRST_WAIT;
        let (at_least, at_most, _) = pause_after(ErrorCode::UnknownTopicOrPartition);
        assert!(at_least >= first && at_most <= first);
        let (at_least, at_most, _) = pause_after(ErrorCode::UnknownLeaderEpoch);
        assert!(at_least >= first * 2 && at_most <= first * 2);
        let (at_least, at_most, _) = pause_after(ErrorCode::UnknownLeaderEpoch);
        assert!(at_least >= first * 4 && at_most <= first * 4);
        for _ in 0..20 {
            pause_after(ErrorCode::UnknownLeaderEpoch);
        }
        let (at_least, at_most, _) = pause_after(ErrorCode::UnknownLeaderEpoch);
        assert!(
            at_least >= REFUSED_WAIT && at_most <= REFUSED_WAIT,
            "the wait stays bounded"
        );

        // A leader that moved on: wait for the new metadata, and start over the next time.
        let (at_least, _, behind) = pause_after(ErrorCode::NotLeaderOrFollower);
        assert!(at_least >= REFUSED_WAIT);
        assert_eq!(behind, 0);
        let (_, at_most, _) = pause_after(ErrorCode::UnknownLeaderEpoch);
        assert!(at_most <= first);
    }
}
