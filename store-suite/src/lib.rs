//! The controller core's tests, written against any [`MetadataStore`]: each test takes a
//! [`StoreFactory`] whose stores all see the same metadata, so that opening a second one is
//! a controller restart. [`crate::metadata_store_suite!`] turns them into `#[tokio::test]`s
//! for a store backend; the file store runs them in the broker's tests, the Kubernetes store
//! in the operator's.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tributary_broker::TopicPartition;
use tributary_broker::controller::*;
use tributary_broker::metadata::*;

/// Opens stores over one body of metadata, as successive controllers would.
pub trait StoreFactory: Send + Sync {
    type Store: MetadataStore;
    /// A store over the same metadata as every earlier one; the earlier controller is gone.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
}

/// Generates one `#[tokio::test]` per controller test for the store factory `$stores`
/// (an expression evaluated afresh for each test). `real_time: $stores` leaves out the
/// tests that run on tokio's paused clock, for a store over a real server, whose client's
/// timers must not jump ahead while it waits on the network.
#[macro_export]
macro_rules! metadata_store_suite {
    ($stores:expr) => {
        $crate::metadata_store_suite!(@lists $stores, paused);
    };
    (real_time: $stores:expr) => {
        $crate::metadata_store_suite!(@lists $stores, skipped);
    };
    (@lists $stores:expr, $paused_tests:ident) => {
        $crate::metadata_store_suite!(@tests $stores;
            [
                topics_are_stored_published_and_survive_a_controller_restart,
                the_cluster_id_is_made_once_and_kept_across_controller_restarts,
                bad_topics_are_refused_with_what_to_do,
                validate_only_changes_nothing_and_deleted_topics_come_back_with_a_new_id,
                replicas_are_placed_evenly_over_live_brokers,
                racks_from_the_host_place_replicas_apart_unless_a_broker_names_its_own,
                partitions_grow_evenly_and_never_shrink,
                config_changes_are_checked_stored_and_published,
                a_closed_session_moves_leadership_to_an_in_sync_replica_with_a_new_epoch,
                a_partition_without_in_sync_replicas_waits_for_one_and_then_elects_it,
                unclean_election_lets_an_out_of_sync_replica_lead_when_the_topic_allows_it,
                a_broker_back_with_an_empty_disk_is_out_of_sync_everywhere,
                isr_changes_apply_only_from_the_current_leader_at_the_current_epochs,
                a_controlled_shutdown_moves_leaderships_away,
                producer_id_blocks_never_overlap_even_across_controller_restarts,
                the_internal_offsets_topic_is_stored_like_any_other,
                a_stopped_controller_answers_nothing_and_says_why,
                a_rebalance_onto_new_brokers_moves_replicas_safely_and_evens_the_counts,
                a_restarted_controller_resumes_a_rebalance_where_it_was,
                a_cordoned_broker_is_drained_and_gets_no_new_replicas,
                a_move_whose_new_broker_goes_away_is_rolled_back,
                the_broker_count_drains_the_brokers_that_go_and_fills_new_ones,
                a_broker_count_settles_with_brokers_left_empty_and_growing_again_uncordons,
                a_rebalance_says_how_many_bytes_its_new_replicas_still_have_to_copy
            ]
            $paused_tests [
                a_silent_broker_is_fenced_after_the_session_timeout,
                a_restarted_controller_waits_one_session_timeout_for_brokers_to_return,
                a_stall_of_the_controller_does_not_count_against_broker_sessions,
                a_broker_silent_before_a_controller_stall_is_fenced_when_its_time_is_up,
                a_restarted_controller_waits_for_known_brokers_before_placing_a_topic,
                a_topic_placed_after_brokers_never_returned_says_what_to_do,
                a_broker_gone_longer_than_self_healing_allows_has_its_replicas_recreated,
                leadership_goes_back_to_preferred_leaders_once_they_are_in_sync
            ]
        );
    };
    (@tests $stores:expr; [$($name:ident),*] paused [$($paused:ident),*]) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::$name(&$stores).await
            }
        )*
        $(
            #[tokio::test(start_paused = true)]
            async fn $paused() {
                $crate::$paused(&$stores).await
            }
        )*
    };
    (@tests $stores:expr; [$($name:ident),*] skipped [$($paused:ident),*]) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::$name(&$stores).await
            }
        )*
    };
}

fn broker(id: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "127.0.0.1".into(),
        port: 9095 + id as u16,
        kafka_port: 9092 + id as u16,
        rack: None,
    }
}

fn registration(id: i32) -> Registration {
    Registration {
        broker: broker(id),
        incarnation: format!("disk-of-{id}"),
    }
}

async fn controller<F: StoreFactory>(stores: &F) -> Controller<F::Store> {
    let store = stores.open().await;
    let config = ControllerConfig {
        session_timeout: Duration::from_secs(6),
        ..ControllerConfig::default()
    };
    Controller::start(0, store, config).await.unwrap()
}

/// A controller with brokers 1..=n in session.
async fn cluster<F: StoreFactory>(stores: &F, n: i32) -> (Controller<F::Store>, Vec<u64>) {
    let controller = controller(stores).await;
    let mut sessions = Vec::new();
    for id in 1..=n {
        sessions.push(controller.register_broker(registration(id)).await.unwrap());
    }
    (controller, sessions)
}

fn topic(name: &str, partitions: u32, rf: Option<u32>) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        config: BTreeMap::new(),
    }
}

/// Creates a topic that must be accepted, and returns its record.
async fn create<S: MetadataStore>(
    c: &Controller<S>,
    name: &str,
    partitions: u32,
    rf: Option<u32>,
) -> TopicRecord {
    c.create_topic(topic(name, partitions, rf), false)
        .await
        .unwrap()
        .0
}

fn partition<S: MetadataStore>(c: &Controller<S>, name: &str, p: usize) -> PartitionRecord {
    c.snapshot().topics[name].partitions[p].clone()
}

pub async fn the_cluster_id_is_made_once_and_kept_across_controller_restarts(
    stores: &impl StoreFactory,
) {
    let first = controller(stores).await.snapshot().cluster_id.clone();
    assert_eq!(first.len(), 22, "Kafka's form: {first}");
    assert!(
        first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "URL-safe base64: {first}"
    );
    let again = controller(stores).await.snapshot().cluster_id.clone();
    assert_eq!(again, first, "a restarted controller keeps the cluster id");
}

pub async fn topics_are_stored_published_and_survive_a_controller_restart(
    stores: &impl StoreFactory,
) {
    let created = {
        let (controller, _) = cluster(stores, 1).await;
        let mut updates = controller.subscribe();
        updates.borrow_and_update();
        let (record, version) = controller
            .create_topic(topic("orders", 3, None), false)
            .await
            .unwrap();
        assert!(updates.has_changed().unwrap());
        assert_eq!(updates.borrow().version, version);
        assert_eq!(updates.borrow().topics["orders"], record);
        assert!(
            record
                .partitions
                .iter()
                .all(|p| p.leader == 1 && p.isr == vec![1])
        );
        record
    };
    let controller = controller(stores).await;
    let snapshot = controller.snapshot();
    assert_eq!(snapshot.topics["orders"], created);
    assert_eq!(
        snapshot.controller_epoch, 2,
        "each controller start takes a new epoch"
    );
}

pub async fn bad_topics_are_refused_with_what_to_do(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 1).await;
    create(&controller, "t", 1, None).await;
    let min_isr = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
    let cases = [
        (topic("t", 1, None), "already exists"),
        (topic("bad/name", 1, None), "'/'"),
        (topic("__internal", 1, None), "reserved"),
        (topic("z", 0, None), "from 1 to"),
        (
            topic("z", 1, Some(3)),
            "3 requested, but 1 broker is available",
        ),
        (
            NewTopic {
                config: BTreeMap::from([("retention.ms".into(), "x".into())]),
                ..topic("z", 1, None)
            },
            "invalid value 'x' for retention.ms",
        ),
        (
            NewTopic {
                config: min_isr,
                ..topic("z", 1, None)
            },
            "min.insync.replicas 2 is larger than the replication factor 1",
        ),
    ];
    for (bad, expected) in cases {
        let err = controller.create_topic(bad, false).await.unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
    }
    let err = controller.delete_topic("nope").await.unwrap_err();
    assert!(err.to_string().contains("unknown topic 'nope'"), "{err}");
}

pub async fn validate_only_changes_nothing_and_deleted_topics_come_back_with_a_new_id(
    stores: &impl StoreFactory,
) {
    let (controller, _) = cluster(stores, 1).await;
    controller
        .create_topic(topic("t", 2, None), true)
        .await
        .unwrap();
    assert!(controller.snapshot().topics.is_empty());
    let first = create(&controller, "t", 1, None).await;
    controller.delete_topic("t").await.unwrap();
    assert!(!controller.snapshot().topics.contains_key("t"));
    let second = create(&controller, "t", 1, None).await;
    assert_ne!(first.id, second.id);
}

pub async fn replicas_are_placed_evenly_over_live_brokers(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 3).await;
    create(&controller, "a", 7, Some(3)).await;
    create(&controller, "b", 5, Some(2)).await;
    let snapshot = controller.snapshot();
    let mut replicas = BTreeMap::<i32, usize>::new();
    let mut leaders = BTreeMap::<i32, usize>::new();
    for p in snapshot.topics.values().flat_map(|t| &t.partitions) {
        *leaders.entry(p.leader).or_default() += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_default() += 1;
        }
    }
    for counts in [replicas, leaders] {
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(max - min <= 1, "{counts:?}");
    }
}

pub async fn racks_from_the_host_place_replicas_apart_unless_a_broker_names_its_own(
    stores: &impl StoreFactory,
) {
    let (controller, _) = cluster(stores, 4).await;
    let rack_of = |c: &Controller<_>, id: i32| c.snapshot().brokers[&id].rack.clone();
    let racks = |pairs: &[(i32, &str)]| -> BTreeMap<i32, String> {
        pairs.iter().map(|(id, r)| (*id, r.to_string())).collect()
    };
    controller
        .set_racks(racks(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]))
        .await
        .unwrap();
    assert_eq!(rack_of(&controller, 3).as_deref(), Some("b"));
    // Placement uses them: every partition has a replica in each rack.
    create(&controller, "t", 8, Some(2)).await;
    for p in &controller.snapshot().topics["t"].partitions {
        let in_racks: BTreeSet<_> = p
            .replicas
            .iter()
            .map(|r| rack_of(&controller, *r))
            .collect();
        assert_eq!(in_racks.len(), 2, "{:?}", p.replicas);
    }
    // A restarted broker without a rack of its own gets the host's again; one that names
    // its own keeps it; a broker the host knows nothing of has none.
    controller.register_broker(registration(3)).await.unwrap();
    assert_eq!(rack_of(&controller, 3).as_deref(), Some("b"));
    let mut own = registration(4);
    own.broker.rack = Some("own".into());
    controller.register_broker(own).await.unwrap();
    controller.register_broker(registration(5)).await.unwrap();
    controller
        .set_racks(racks(&[(1, "a"), (2, "c"), (3, "b"), (4, "b")]))
        .await
        .unwrap();
    assert_eq!(rack_of(&controller, 2).as_deref(), Some("c"));
    assert_eq!(rack_of(&controller, 4).as_deref(), Some("own"));
    assert_eq!(rack_of(&controller, 5), None);
}

pub async fn a_closed_session_moves_leadership_to_an_in_sync_replica_with_a_new_epoch(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 3).await;
    create(&controller, "t", 1, Some(3)).await;
    let before = partition(&controller, "t", 0);
    let leader = before.leader;
    controller
        .end_session(leader, sessions[(leader - 1) as usize])
        .await
        .unwrap();
    let after = partition(&controller, "t", 0);
    assert_ne!(after.leader, leader);
    assert!(!after.isr.contains(&leader));
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert!(after.partition_epoch > before.partition_epoch);
    assert!(!controller.snapshot().brokers.contains_key(&leader));
    // The change was persisted before it was published: a new controller sees it.
    drop(controller);
    assert_eq!(
        self::controller(stores).await.snapshot().topics["t"].partitions[0],
        after
    );
}

pub async fn a_silent_broker_is_fenced_after_the_session_timeout(stores: &impl StoreFactory) {
    let (controller, sessions) = cluster(stores, 2).await;
    create(&controller, "t", 2, Some(2)).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    controller.heartbeat(1, sessions[0]).await.unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    controller.expire_sessions().await.unwrap();
    let snapshot = controller.snapshot();
    assert!(snapshot.brokers.contains_key(&1) && !snapshot.brokers.contains_key(&2));
    assert!(
        snapshot.topics["t"]
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.isr == vec![1])
    );
    let err = controller.heartbeat(2, sessions[1]).await.unwrap_err();
    assert!(err.to_string().contains("must register again"), "{err}");
}

pub async fn a_restarted_controller_waits_one_session_timeout_for_brokers_to_return(
    stores: &impl StoreFactory,
) {
    {
        let (controller, _) = cluster(stores, 2).await;
        create(&controller, "t", 2, Some(2)).await;
    }
    let controller = controller(stores).await;
    let leaders: Vec<i32> = controller.snapshot().topics["t"]
        .partitions
        .iter()
        .map(|p| p.leader)
        .collect();
    controller.register_broker(registration(1)).await.unwrap();
    controller.expire_sessions().await.unwrap();
    assert_eq!(
        controller.snapshot().topics["t"]
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect::<Vec<_>>(),
        leaders,
        "no change within the grace period"
    );
    // Seven seconds with broker 1 heartbeating and sessions checked as the controller does.
    for _ in 0..28 {
        tokio::time::advance(Duration::from_millis(250)).await;
        controller.heartbeat(1, 1).await.unwrap();
        controller.expire_sessions().await.unwrap();
    }
    assert!(
        controller.snapshot().topics["t"]
            .partitions
            .iter()
            .all(|p| p.leader == 1 && p.isr == vec![1]),
        "broker 2 never came back"
    );
}

pub async fn a_stall_of_the_controller_does_not_count_against_broker_sessions(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 2).await;
    create(&controller, "t", 2, Some(2)).await;
    controller.expire_sessions().await.unwrap();
    let before = controller.snapshot();
    // Paused for longer than a session timeout: the brokers' heartbeats wait unread.
    tokio::time::advance(Duration::from_secs(10)).await;
    controller.expire_sessions().await.unwrap();
    assert_eq!(controller.snapshot().topics, before.topics);
    for (broker, session) in [(1, sessions[0]), (2, sessions[1])] {
        controller.heartbeat(broker, session).await.unwrap();
    }
    // A broker that then stays silent is fenced as usual.
    for _ in 0..28 {
        tokio::time::advance(Duration::from_millis(250)).await;
        controller.heartbeat(1, sessions[0]).await.unwrap();
        controller.expire_sessions().await.unwrap();
    }
    let snapshot = controller.snapshot();
    assert!(snapshot.brokers.contains_key(&1) && !snapshot.brokers.contains_key(&2));
}

pub async fn a_broker_silent_before_a_controller_stall_is_fenced_when_its_time_is_up(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 2).await;
    create(&controller, "t", 2, Some(2)).await;
    let session = sessions[0];
    let beat = |ticks: usize| {
        let controller = &controller;
        async move {
            for _ in 0..ticks {
                tokio::time::advance(Duration::from_millis(250)).await;
                controller.heartbeat(1, session).await.unwrap();
                controller.expire_sessions().await.unwrap();
            }
        }
    };
    // Broker 2 goes silent; four seconds later the controller stalls for ten.
    beat(16).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    controller.expire_sessions().await.unwrap();
    assert!(
        controller.snapshot().brokers.contains_key(&2),
        "not during the stall"
    );
    // Its six-second timeout ends two seconds (plus a check) after the stall, not six.
    beat(12).await;
    assert!(!controller.snapshot().brokers.contains_key(&2));
}

pub async fn a_partition_without_in_sync_replicas_waits_for_one_and_then_elects_it(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 2).await;
    create(&controller, "t", 1, Some(2)).await;
    let p = partition(&controller, "t", 0);
    let (leader, follower) = (p.leader, p.replicas[1]);
    controller
        .end_session(follower, sessions[(follower - 1) as usize])
        .await
        .unwrap();
    controller
        .end_session(leader, sessions[(leader - 1) as usize])
        .await
        .unwrap();
    let p = partition(&controller, "t", 0);
    assert_eq!(
        (p.leader, p.isr.clone()),
        (-1, vec![leader]),
        "the last in-sync replica is remembered"
    );
    controller
        .register_broker(registration(follower))
        .await
        .unwrap();
    assert_eq!(
        partition(&controller, "t", 0).leader,
        -1,
        "an out-of-sync replica does not lead"
    );
    controller
        .register_broker(registration(leader))
        .await
        .unwrap();
    assert_eq!(partition(&controller, "t", 0).leader, leader);
}

pub async fn unclean_election_lets_an_out_of_sync_replica_lead_when_the_topic_allows_it(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 2).await;
    let config = BTreeMap::from([(
        "unclean.leader.election.enable".to_string(),
        "true".to_string(),
    )]);
    controller
        .create_topic(
            NewTopic {
                config,
                ..topic("t", 1, Some(2))
            },
            false,
        )
        .await
        .unwrap();
    let p = partition(&controller, "t", 0);
    let (leader, follower) = (p.leader, p.replicas[1]);
    controller
        .end_session(follower, sessions[(follower - 1) as usize])
        .await
        .unwrap();
    controller
        .end_session(leader, sessions[(leader - 1) as usize])
        .await
        .unwrap();
    controller
        .register_broker(registration(follower))
        .await
        .unwrap();
    let p = partition(&controller, "t", 0);
    assert_eq!((p.leader, p.isr.clone()), (follower, vec![follower]));
}

pub async fn a_broker_back_with_an_empty_disk_is_out_of_sync_everywhere(
    stores: &impl StoreFactory,
) {
    let (controller, _) = cluster(stores, 3).await;
    create(&controller, "t", 3, Some(3)).await;
    controller
        .register_broker(Registration {
            broker: broker(2),
            incarnation: "a-new-disk".into(),
        })
        .await
        .unwrap();
    let snapshot = controller.snapshot();
    for p in &snapshot.topics["t"].partitions {
        assert!(!p.isr.contains(&2), "{p:?}");
        assert_ne!(p.leader, 2);
    }
}

pub async fn isr_changes_apply_only_from_the_current_leader_at_the_current_epochs(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 3).await;
    create(&controller, "t", 1, Some(3)).await;
    let p = partition(&controller, "t", 0);
    let leader = p.leader;
    let follower = p.replicas.iter().copied().find(|r| *r != leader).unwrap();
    let proposal = |isr: Vec<i32>, leader_epoch: i32, partition_epoch: i32| IsrProposal {
        topic: "t".into(),
        partition: 0,
        leader_epoch,
        partition_epoch,
        new_isr: isr,
    };
    let shrunk: Vec<i32> = p.isr.iter().copied().filter(|r| *r != follower).collect();
    let outcomes = controller
        .alter_isr(
            leader,
            vec![proposal(shrunk.clone(), p.leader_epoch, p.partition_epoch)],
        )
        .await
        .unwrap();
    assert_eq!(outcomes[0].0, Ok(()));
    let now = outcomes[0].1.clone().unwrap();
    assert_eq!(
        (now.isr.clone(), now.partition_epoch),
        (shrunk.clone(), p.partition_epoch + 1)
    );

    let rejected = [
        (
            follower,
            proposal(p.isr.clone(), now.leader_epoch, now.partition_epoch),
            "does not lead",
        ),
        (
            leader,
            proposal(p.isr.clone(), now.leader_epoch, p.partition_epoch),
            "partition epoch",
        ),
        (
            leader,
            proposal(vec![follower], now.leader_epoch, now.partition_epoch),
            "leaves out its leader",
        ),
        (
            leader,
            proposal(vec![leader, 9], now.leader_epoch, now.partition_epoch),
            "not a replica",
        ),
    ];
    for (from, bad, says) in rejected {
        let outcomes = controller.alter_isr(from, vec![bad]).await.unwrap();
        let err = outcomes[0].0.clone().unwrap_err();
        assert!(err.to_string().contains(says), "{err} should say {says}");
        assert_eq!(partition(&controller, "t", 0), now, "nothing changed");
    }
    // A replica without a session may not join.
    controller
        .end_session(follower, sessions[(follower - 1) as usize])
        .await
        .unwrap();
    let now = partition(&controller, "t", 0);
    let outcomes = controller
        .alter_isr(
            leader,
            vec![proposal(
                p.isr.clone(),
                now.leader_epoch,
                now.partition_epoch,
            )],
        )
        .await
        .unwrap();
    assert!(
        outcomes[0]
            .0
            .clone()
            .unwrap_err()
            .to_string()
            .contains("not in session")
    );
}

pub async fn a_controlled_shutdown_moves_leaderships_away(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 3).await;
    create(&controller, "t", 6, Some(2)).await;
    create(&controller, "single", 3, Some(1)).await;
    let alone = controller.snapshot().topics["single"]
        .partitions
        .iter()
        .filter(|p| p.leader == 1)
        .count() as u32;
    let remaining = controller.controlled_shutdown(1).await.unwrap();
    assert_eq!(
        remaining, alone,
        "only partitions with no other replica stay"
    );
    let snapshot = controller.snapshot();
    for p in &snapshot.topics["t"].partitions {
        assert_ne!(p.leader, 1);
        assert!(!p.isr.contains(&1));
    }
    let err = controller.controlled_shutdown(9).await.unwrap_err();
    assert!(err.to_string().contains("broker 9 has no session"), "{err}");
}

pub async fn producer_id_blocks_never_overlap_even_across_controller_restarts(
    stores: &impl StoreFactory,
) {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let controller = controller(stores).await;
        for broker in [1, 2] {
            seen.push(controller.allocate_producer_ids(broker).await.unwrap());
        }
    }
    seen.sort();
    for pair in seen.windows(2) {
        assert!(pair[0].0 + i64::from(pair[0].1) <= pair[1].0, "{seen:?}");
    }
}

pub async fn a_restarted_controller_waits_for_known_brokers_before_placing_a_topic(
    stores: &impl StoreFactory,
) {
    drop(cluster(stores, 2).await);
    let controller = Arc::new(controller(stores).await);
    controller.register_broker(registration(1)).await.unwrap();
    let creating = tokio::spawn({
        let controller = controller.clone();
        async move { controller.create_topic(topic("t", 1, Some(2)), false).await }
    });
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!creating.is_finished(), "waits for broker 2 to register");
    controller.register_broker(registration(2)).await.unwrap();
    let (record, _) = creating.await.unwrap().unwrap();
    assert_eq!(record.partitions[0].replicas.len(), 2);
}

/// Brokers that never come back: after the grace period the answer says what to do.
pub async fn a_topic_placed_after_brokers_never_returned_says_what_to_do(
    stores: &impl StoreFactory,
) {
    drop(cluster(stores, 2).await);
    let controller = self::controller(stores).await;
    let err = controller
        .create_topic(topic("t", 1, Some(2)), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no broker is registered"), "{err}");
}

pub async fn partitions_grow_evenly_and_never_shrink(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 3).await;
    let before = create(&controller, "t", 2, Some(2)).await;
    let (grown, version) = controller.create_partitions("t", 6).await.unwrap();
    assert_eq!(grown.id, before.id);
    assert_eq!(grown.partitions[..2], before.partitions[..]);
    assert_eq!(grown.partitions.len(), 6);
    assert!(grown.partitions.iter().all(|p| p.replicas.len() == 2));
    assert_eq!(controller.snapshot().version, version);
    let mut leaders = BTreeMap::<i32, usize>::new();
    for p in &grown.partitions {
        *leaders.entry(p.leader).or_default() += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    // The same count again is nothing to do; fewer is refused with why.
    let (same, _) = controller.create_partitions("t", 6).await.unwrap();
    assert_eq!(same, grown);
    let err = controller.create_partitions("t", 3).await.unwrap_err();
    assert!(err.to_string().contains("can only be added"), "{err}");
    let err = controller.create_partitions("nope", 3).await.unwrap_err();
    assert!(err.to_string().contains("unknown topic 'nope'"), "{err}");
    drop(controller);
    assert_eq!(self::controller(stores).await.snapshot().topics["t"], grown);
}

pub async fn config_changes_are_checked_stored_and_published(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 2).await;
    create(&controller, "t", 1, Some(2)).await;
    let config = BTreeMap::from([
        ("retention.ms".to_string(), "60000".to_string()),
        ("min.insync.replicas".to_string(), "2".to_string()),
    ]);
    let (changed, version) = controller
        .alter_topic_config("t", config.clone())
        .await
        .unwrap();
    assert_eq!(changed.config, config);
    assert_eq!(controller.snapshot().version, version);
    for (key, value, expected) in [
        ("retention.ms", "x", "invalid value 'x' for retention.ms"),
        (
            "min.insync.replicas",
            "3",
            "larger than the replication factor 2",
        ),
    ] {
        let bad = BTreeMap::from([(key.to_string(), value.to_string())]);
        let err = controller.alter_topic_config("t", bad).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert_eq!(controller.snapshot().topics["t"].config, config);
    drop(controller);
    assert_eq!(
        self::controller(stores).await.snapshot().topics["t"].config,
        config
    );
}

pub async fn the_internal_offsets_topic_is_stored_like_any_other(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 3).await;
    let created = controller.create_offsets_topic().await.unwrap();
    assert_eq!(created.replication_factor(), 3);
    assert_eq!(controller.create_offsets_topic().await.unwrap(), created);
    drop(controller);
    let snapshot = self::controller(stores).await.snapshot();
    assert_eq!(snapshot.topics[OFFSETS_TOPIC], created);
}

pub async fn a_stopped_controller_answers_nothing_and_says_why(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 1).await;
    let closed = controller.closed();
    controller.close();
    closed.await;
    let err = controller
        .create_topic(topic("t", 1, None), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ControllerError::Closed), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");
    let err = controller
        .register_broker(registration(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ControllerError::Closed), "{err}");
    assert!(controller.snapshot().topics.is_empty());
}

/// What leaders do for replicas a move adds: once a new replica has caught up, its leader
/// proposes it for the ISR. Here every replica in session catches up at once.
pub async fn catch_up<S: MetadataStore>(c: &Controller<S>) {
    let snapshot = c.snapshot();
    for topic in snapshot.topics.values() {
        for (i, p) in topic.partitions.iter().enumerate() {
            let joining: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !p.isr.contains(r) && snapshot.brokers.contains_key(r))
                .collect();
            if joining.is_empty() || p.leader < 0 {
                continue;
            }
            let mut isr = p.isr.clone();
            isr.extend(joining);
            let proposal = IsrProposal {
                topic: topic.name.clone(),
                partition: i as u32,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: isr,
            };
            let (verdict, _) = c
                .alter_isr(p.leader, vec![proposal])
                .await
                .unwrap()
                .remove(0);
            verdict.unwrap();
        }
    }
}

/// Every partition keeps at least its replication factor, a leader in its ISR, and an ISR
/// within its replicas.
fn assert_safe<S: MetadataStore>(c: &Controller<S>, rf: usize) {
    for topic in c.snapshot().topics.values() {
        for p in &topic.partitions {
            assert!(p.replicas.len() >= rf, "{p:?}");
            assert!(p.isr.iter().all(|r| p.replicas.contains(r)), "{p:?}");
            assert!(p.leader < 0 || p.isr.contains(&p.leader), "{p:?}");
        }
    }
}

/// Moves the rebalance on (replicas catching up in between) until it is done.
async fn drive<S: MetadataStore>(c: &Controller<S>, rf: usize) -> Plan {
    for _ in 0..100 {
        c.advance_reassignments().await.unwrap();
        assert_safe(c, rf);
        let plan = c.rebalance_status().await.unwrap();
        if plan.moves.is_empty() {
            return plan;
        }
        assert!(plan.moves.iter().filter(|m| m.started).count() <= plan.max_concurrent);
        catch_up(c).await;
    }
    panic!(
        "the rebalance did not finish: {:?}",
        c.rebalance_status().await.unwrap()
    );
}

/// Whether a rebalance is in progress.
async fn moving<S: MetadataStore>(c: &Controller<S>) -> bool {
    !c.rebalance_status().await.unwrap().moves.is_empty()
}

fn counts<S: MetadataStore>(c: &Controller<S>) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for p in c.snapshot().topics.values().flat_map(|t| &t.partitions) {
        *leaders.entry(p.leader).or_insert(0) += 1;
        for r in &p.replicas {
            *replicas.entry(*r).or_insert(0) += 1;
        }
    }
    (replicas, leaders)
}

fn within_one(counts: &BTreeMap<i32, usize>, brokers: &[i32]) -> bool {
    let values: Vec<usize> = brokers
        .iter()
        .map(|b| counts.get(b).copied().unwrap_or(0))
        .collect();
    values.iter().max().unwrap() - values.iter().min().unwrap() <= 1
}

pub async fn a_rebalance_onto_new_brokers_moves_replicas_safely_and_evens_the_counts(
    stores: &impl StoreFactory,
) {
    let (controller, _) = cluster(stores, 3).await;
    create(&controller, "a", 8, Some(2)).await;
    create(&controller, "b", 4, Some(3)).await;
    for id in [4, 5] {
        controller.register_broker(registration(id)).await.unwrap();
    }
    let before = controller.snapshot();
    let dry = controller.rebalance(true).await.unwrap();
    assert!(dry.total > 0);
    assert_eq!(
        controller.snapshot().topics,
        before.topics,
        "a dry run moves nothing"
    );
    assert!(!moving(&controller).await);

    let plan = controller.rebalance(false).await.unwrap();
    assert_eq!(plan.total, dry.total);
    let err = controller.rebalance(false).await.unwrap_err();
    assert!(err.to_string().contains("in progress"), "{err}");
    let finished = drive(&controller, 2).await;
    assert_eq!((finished.done, finished.rolled_back), (plan.total, 0));

    let (replicas, leaders) = counts(&controller);
    let all = [1, 2, 3, 4, 5];
    assert!(within_one(&replicas, &all), "{replicas:?}");
    assert!(within_one(&leaders, &all), "{leaders:?}");
    for (name, rf) in [("a", 2), ("b", 3)] {
        for p in &controller.snapshot().topics[name].partitions {
            assert_eq!(p.replicas.len(), rf, "{p:?}");
            assert_eq!(p.isr.len(), rf, "{p:?}");
            assert_eq!(p.leader, p.replicas[0], "the preferred leader leads");
        }
    }
    assert_eq!(controller.snapshot().topics["a"].id, before.topics["a"].id);
    // Balanced: nothing more to do.
    assert_eq!(controller.rebalance(true).await.unwrap().total, 0);
}

pub async fn a_restarted_controller_resumes_a_rebalance_where_it_was(stores: &impl StoreFactory) {
    let plan = {
        let (controller, _) = cluster(stores, 2).await;
        create(&controller, "t", 6, Some(2)).await;
        controller.register_broker(registration(3)).await.unwrap();
        let plan = controller.rebalance(false).await.unwrap();
        controller.advance_reassignments().await.unwrap();
        plan
    };
    let controller = self::controller(stores).await;
    // Before the brokers are back, none of them is gone: nothing is rolled back.
    controller.register_broker(registration(1)).await.unwrap();
    controller.advance_reassignments().await.unwrap();
    let waiting = controller.rebalance_status().await.unwrap();
    assert_eq!((waiting.done, waiting.rolled_back), (0, 0), "{waiting:?}");
    for id in [2, 3] {
        controller.register_broker(registration(id)).await.unwrap();
    }
    let resumed = controller.rebalance_status().await.unwrap();
    assert_eq!(resumed.total, plan.total);
    assert!(!resumed.moves.is_empty());
    assert!(
        resumed.moves.iter().any(|m| m.started),
        "moves in flight stay in flight"
    );
    let finished = drive(&controller, 2).await;
    assert_eq!(finished.done + finished.rolled_back, plan.total);
    let (replicas, _) = counts(&controller);
    assert!(within_one(&replicas, &[1, 2, 3]), "{replicas:?}");
}

pub async fn a_cordoned_broker_is_drained_and_gets_no_new_replicas(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 4).await;
    create(&controller, "t", 8, Some(2)).await;
    controller.cordon(BTreeSet::from([4])).await.unwrap();
    let fresh = create(&controller, "fresh", 6, Some(2)).await;
    assert!(fresh.partitions.iter().all(|p| !p.replicas.contains(&4)));
    controller.rebalance(false).await.unwrap();
    drive(&controller, 2).await;
    let (replicas, leaders) = counts(&controller);
    assert_eq!(replicas.get(&4), None, "drained: {replicas:?}");
    assert_eq!(leaders.get(&4), None);
    assert!(within_one(&replicas, &[1, 2, 3]), "{replicas:?}");
    drop(controller);
    let controller = self::controller(stores).await;
    assert_eq!(controller.cordoned().await.unwrap(), BTreeSet::from([4]));
}

pub async fn the_broker_count_drains_the_brokers_that_go_and_fills_new_ones(
    stores: &impl StoreFactory,
) {
    let controller = controller(stores).await;
    let mut sessions = BTreeMap::new();
    for id in 0..4 {
        let session = controller.register_broker(registration(id)).await.unwrap();
        sessions.insert(id, session);
    }
    create(&controller, "t", 8, Some(2)).await;
    // Below the replication factor: refused, and nothing is stored or cordoned.
    let err = controller.scale(1).await.unwrap_err();
    assert!(
        err.to_string().contains("topic 't' keeps 2 replicas")
            && err.to_string().contains("scale to 2 or more"),
        "{err}"
    );
    assert!(controller.scale_status().await.unwrap().is_none());
    assert!(controller.scale(0).await.is_err());

    // Shrinking: the highest ids are cordoned and drained, and may go only when empty.
    let asked = controller.scale(2).await.unwrap();
    assert_eq!((asked.run, asked.phase), (4, ScalePhase::Draining));
    assert_eq!(controller.cordoned().await.unwrap(), BTreeSet::from([2, 3]));
    assert!(moving(&controller).await);
    drive(&controller, 2).await;
    let (replicas, leaders) = counts(&controller);
    assert!(replicas.keys().all(|b| *b < 2), "{replicas:?}");
    assert!(leaders.keys().all(|b| *b < 2), "{leaders:?}");
    let (wanted, drained) = controller.scale_status().await.unwrap().unwrap();
    assert_eq!(
        (wanted, drained.run, drained.phase),
        (2, 2, ScalePhase::Drained)
    );
    // They stop; once gone, their cordons go too.
    for id in [2, 3] {
        controller.end_session(id, sessions[&id]).await.unwrap();
    }
    controller.tick().await.unwrap();
    assert!(controller.cordoned().await.unwrap().is_empty());
    let (_, after) = controller.scale_status().await.unwrap().unwrap();
    assert_eq!((after.run, after.phase), (2, ScalePhase::Balanced));

    // Growing: nothing moves until the new broker has registered, then it is filled.
    let asked = controller.scale(3).await.unwrap();
    assert_eq!((asked.run, asked.phase), (3, ScalePhase::WaitingForBrokers));
    assert!(!moving(&controller).await);
    controller.register_broker(registration(2)).await.unwrap();
    controller.tick().await.unwrap();
    assert!(moving(&controller).await);
    drive(&controller, 2).await;
    let (replicas, _) = counts(&controller);
    assert!(within_one(&replicas, &[0, 1, 2]), "{replicas:?}");

    // The count asked for survives a restart.
    drop(controller);
    let controller = self::controller(stores).await;
    assert_eq!(controller.scale_status().await.unwrap().unwrap().0, 3);
    drop(controller);
    // Where something else sets the broker count (a Cluster's spec.replicas), `scale`
    // says where.
    let config = ControllerConfig {
        broker_count_set_by: Some("the Cluster's spec.replicas".into()),
        ..ControllerConfig::default()
    };
    let elsewhere = Controller::start(0, stores.open().await, config)
        .await
        .unwrap();
    let err = elsewhere.scale(4).await.unwrap_err();
    assert!(err.to_string().contains("spec.replicas"), "{err}");
}

pub async fn a_broker_count_settles_with_brokers_left_empty_and_growing_again_uncordons(
    stores: &impl StoreFactory,
) {
    let controller = controller(stores).await;
    for id in 0..4 {
        controller.register_broker(registration(id)).await.unwrap();
    }
    // One partition of two replicas on four brokers: two stay empty, and that is balanced.
    create(&controller, "t", 1, Some(2)).await;
    let settled = controller.scale(4).await.unwrap();
    assert_eq!(settled.phase, ScalePhase::Balanced, "{settled:?}");
    controller.tick().await.unwrap();
    let (_, settled) = controller.scale_status().await.unwrap().unwrap();
    assert_eq!(settled.phase, ScalePhase::Balanced, "{settled:?}");
    assert!(!moving(&controller).await);

    // A shrink cordons brokers 2 and 3; asking for four again before they went lets them
    // take replicas again, while a cordon of a broker that stays is kept.
    controller.cordon(BTreeSet::from([1])).await.unwrap();
    controller.scale(2).await.unwrap();
    assert_eq!(
        controller.cordoned().await.unwrap(),
        BTreeSet::from([1, 2, 3])
    );
    controller.scale(4).await.unwrap();
    assert_eq!(controller.cordoned().await.unwrap(), BTreeSet::from([1]));

    // Brokers not numbered 0 to N-1 are not what `scale` works on.
    controller.register_broker(registration(7)).await.unwrap();
    let err = controller.scale(3).await.unwrap_err();
    assert!(
        err.to_string().contains("0 to N-1") && err.to_string().contains("0, 1, 2, 3, 7"),
        "{err}"
    );
}

pub async fn a_rebalance_says_how_many_bytes_its_new_replicas_still_have_to_copy(
    stores: &impl StoreFactory,
) {
    let (controller, _) = cluster(stores, 2).await;
    create(&controller, "t", 2, Some(2)).await;
    let sizes = |bytes: u64| {
        vec![
            (TopicPartition::new("t", 0), bytes),
            (TopicPartition::new("t", 1), bytes),
        ]
    };
    for broker in [1, 2] {
        controller
            .report_replica_sizes(broker, sizes(1000))
            .await
            .unwrap();
    }
    controller.register_broker(registration(3)).await.unwrap();
    let plan = controller.rebalance(false).await.unwrap();
    let new_replicas: usize = plan
        .moves
        .iter()
        .map(|m| m.target.iter().filter(|r| !m.original.contains(r)).count())
        .sum();
    assert!(new_replicas > 0, "{plan:?}");
    let status = controller.rebalance_status().await.unwrap();
    assert_eq!(status.bytes_remaining, 1000 * new_replicas as u64);
    assert!(
        status.progress().contains("to copy"),
        "{}",
        status.progress()
    );
    // Broker 3 has copied 400 bytes of each partition it takes.
    controller
        .report_replica_sizes(3, sizes(400))
        .await
        .unwrap();
    let status = controller.rebalance_status().await.unwrap();
    assert_eq!(status.bytes_remaining, 600 * new_replicas as u64);
    controller
        .report_replica_sizes(3, sizes(1000))
        .await
        .unwrap();
    assert_eq!(
        controller.rebalance_status().await.unwrap().bytes_remaining,
        0
    );
    assert_eq!(drive(&controller, 2).await.bytes_remaining, 0);
}

pub async fn a_move_whose_new_broker_goes_away_is_rolled_back(stores: &impl StoreFactory) {
    let (controller, _) = cluster(stores, 2).await;
    create(&controller, "t", 4, Some(2)).await;
    let session = controller.register_broker(registration(3)).await.unwrap();
    let before = controller.snapshot().topics["t"].clone();
    controller.rebalance(false).await.unwrap();
    // The moves add broker 3 as a replica; then it dies before catching up.
    assert!(
        controller.snapshot().topics["t"]
            .partitions
            .iter()
            .any(|p| p.replicas.contains(&3))
    );
    controller.end_session(3, session).await.unwrap();
    let finished = drive(&controller, 2).await;
    assert!(finished.rolled_back > 0, "{finished:?}");
    let after = &controller.snapshot().topics["t"];
    for (p, q) in before.partitions.iter().zip(&after.partitions) {
        assert_eq!(p.replicas, q.replicas, "back where it was");
    }
}

pub async fn a_broker_gone_longer_than_self_healing_allows_has_its_replicas_recreated(
    stores: &impl StoreFactory,
) {
    let config = ControllerConfig {
        session_timeout: Duration::from_secs(6),
        self_healing_after: Some(Duration::from_secs(60)),
        ..ControllerConfig::default()
    };
    let controller = Controller::start(0, stores.open().await, config)
        .await
        .unwrap();
    let mut sessions = BTreeMap::new();
    for id in 1..=4 {
        sessions.insert(
            id,
            controller.register_broker(registration(id)).await.unwrap(),
        );
    }
    create(&controller, "t", 8, Some(3)).await;
    controller.end_session(4, sessions[&4]).await.unwrap();
    controller.tick().await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    controller.tick().await.unwrap();
    assert!(!moving(&controller).await, "not before selfHealing.after");
    tokio::time::advance(Duration::from_secs(31)).await;
    for id in 1..=3 {
        controller.heartbeat(id, sessions[&id]).await.unwrap();
    }
    controller.tick().await.unwrap();
    assert!(moving(&controller).await);
    drive(&controller, 3).await;
    for p in &controller.snapshot().topics["t"].partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        assert!(!p.replicas.contains(&4), "{p:?}");
        assert_eq!(p.isr.len(), 3, "back at full replication: {p:?}");
    }
}

pub async fn leadership_goes_back_to_preferred_leaders_once_they_are_in_sync(
    stores: &impl StoreFactory,
) {
    let (controller, sessions) = cluster(stores, 3).await;
    create(&controller, "t", 6, Some(3)).await;
    let led_by_1: Vec<usize> = (0..6)
        .filter(|p| partition(&controller, "t", *p).leader == 1)
        .collect();
    assert!(!led_by_1.is_empty());
    controller.end_session(1, sessions[0]).await.unwrap();
    assert!(
        led_by_1
            .iter()
            .all(|p| partition(&controller, "t", *p).leader != 1)
    );
    let session = controller.register_broker(registration(1)).await.unwrap();
    catch_up(&controller).await;
    controller.tick().await.unwrap();
    assert!(
        led_by_1
            .iter()
            .all(|p| partition(&controller, "t", *p).leader != 1),
        "not before the interval"
    );
    tokio::time::advance(Duration::from_secs(301)).await;
    for (id, s) in [(1, session), (2, sessions[1]), (3, sessions[2])] {
        controller.heartbeat(id, s).await.unwrap();
    }
    controller.tick().await.unwrap();
    for p in &led_by_1 {
        assert_eq!(partition(&controller, "t", *p).leader, 1, "partition {p}");
    }
    let (_, leaders) = counts(&controller);
    assert!(within_one(&leaders, &[1, 2, 3]), "{leaders:?}");
}
