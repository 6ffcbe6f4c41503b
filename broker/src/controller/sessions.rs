//! Broker sessions: registration (a broker back with an empty disk is out of sync
//! everywhere), heartbeats, expiry and fencing, and controlled shutdown.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use super::{
    BROKER_PREFIX, Controller, ControllerError, MetadataStore, SESSION_CHECK_INTERVAL, Session,
    State, election,
};
use crate::metadata::BrokerInfo;

/// A broker asking for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub broker: BrokerInfo,
    /// Identifies the broker's data directory; a new one means the broker lost its data.
    pub incarnation: String,
}

impl<S: MetadataStore> Controller<S> {
    /// Starts (or restarts) a broker's session. A broker whose incarnation changed lost its
    /// data: it leaves every ISR. Leaderless partitions it may lead get it as leader.
    /// Returns the session id, for heartbeats.
    pub async fn register_broker(
        &self,
        registration: Registration,
    ) -> Result<u64, ControllerError> {
        let mut state = self.lock().await?;
        let id = registration.broker.id;
        let known = state.incarnations.get(&id).cloned();
        let lost_data = known
            .as_ref()
            .is_some_and(|(incarnation, _)| *incarnation != registration.incarnation);
        if known
            .as_ref()
            .is_none_or(|(incarnation, _)| *incarnation != registration.incarnation)
        {
            let value = serde_json::json!({ "incarnation": registration.incarnation });
            let version = self
                .store_put(
                    &format!("{BROKER_PREFIX}{id}"),
                    &value,
                    known.as_ref().map(|(_, v)| *v),
                )
                .await?;
            state
                .incarnations
                .insert(id, (registration.incarnation.clone(), version));
        }
        if lost_data {
            tracing::warn!(
                broker = id,
                "broker came back with a new data directory: out of sync everywhere"
            );
            let eligible: BTreeSet<i32> =
                state.eligible().into_iter().filter(|b| *b != id).collect();
            self.change_partitions(&mut state, |_, _, p| {
                election::remove_broker(p, id, &|r| eligible.contains(&r), false)
            })
            .await?;
        }
        let session_id = state.next_session;
        state.next_session += 1;
        state.registered.insert(id);
        state.sessions.insert(
            id,
            Session {
                id: session_id,
                last_seen: Instant::now(),
                shutting_down: false,
            },
        );
        let mut broker = registration.broker.clone();
        if broker.rack.is_some() {
            state.own_racks.insert(id);
        } else {
            state.own_racks.remove(&id);
            broker.rack = state.host_racks.get(&id).cloned();
        }
        state.snapshot.brokers.insert(id, broker);
        let eligible = state.eligible();
        let unclean = self.unclean_topics(&state);
        self.change_partitions(&mut state, |topic, _, p| {
            election::elect_if_leaderless(
                p,
                &|r| eligible.contains(&r),
                unclean.contains(&topic.name),
            )
        })
        .await?;
        self.publish(&mut state);
        tracing::info!(broker = id, address = %registration.broker.address(), session = session_id, "broker registered");
        Ok(session_id)
    }

    /// Racks that the controller's host knows for brokers, which may start without knowing
    /// their own (the operator reads them from the nodes the broker pods run on). A broker
    /// that registers without a rack gets the one named here, now or when it registers;
    /// one that named its own keeps it. Only new placements use racks: replicas already
    /// placed stay until a rebalance.
    pub async fn set_racks(&self, racks: BTreeMap<i32, String>) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        if state.host_racks == racks {
            return Ok(());
        }
        let mut changed = false;
        let State {
            snapshot,
            own_racks,
            ..
        } = &mut *state;
        for (id, broker) in snapshot.brokers.iter_mut() {
            if own_racks.contains(id) {
                continue;
            }
            let rack = racks.get(id).cloned();
            if broker.rack != rack {
                tracing::info!(broker = id, rack = ?rack, "broker rack from the controller's host");
                broker.rack = rack;
                changed = true;
            }
        }
        state.host_racks = racks;
        if changed {
            self.publish(&mut state);
        }
        Ok(())
    }

    /// Keeps a session alive.
    pub async fn heartbeat(&self, broker: i32, session: u64) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        match state.sessions.get_mut(&broker) {
            Some(s) if s.id == session => {
                s.last_seen = Instant::now();
                Ok(())
            }
            _ => Err(ControllerError::NoSession(broker)),
        }
    }

    /// A session's connection closed: the broker is fenced at once (unless a newer session
    /// already replaced it).
    pub async fn end_session(&self, broker: i32, session: u64) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        if state.sessions.get(&broker).is_some_and(|s| s.id == session) {
            tracing::info!(broker, "broker session closed");
            self.fence(&mut state, broker).await?;
        }
        Ok(())
    }

    /// Fences brokers whose sessions timed out, and (one session timeout after this
    /// controller started) brokers named as leaders or in-sync replicas that never connected.
    pub async fn expire_sessions(&self) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        let timeout = self.session_timeout();
        // Checks run every SESSION_CHECK_INTERVAL. A long gap means this controller was
        // stalled (paused, starved of CPU), not that the brokers were: their heartbeats are
        // waiting unread. The time the controller could not see does not count against any
        // session (instead of fencing them all), but a broker silent before it still is.
        let now = Instant::now();
        let stalled = state
            .last_expiry_check
            .replace(now)
            .map(|last| now - last)
            .filter(|&gap| gap > (timeout / 2).max(SESSION_CHECK_INTERVAL * 4));
        if let Some(gap) = stalled {
            tracing::warn!(
                ?gap,
                "the controller was stalled; the stall does not count against broker sessions"
            );
            let unseen = gap.saturating_sub(SESSION_CHECK_INTERVAL);
            for session in state.sessions.values_mut() {
                session.last_seen = (session.last_seen + unseen).min(now);
            }
            return Ok(());
        }
        let mut dead: BTreeSet<i32> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        if self.started.elapsed() > timeout {
            for topic in state.snapshot.topics.values() {
                for p in &topic.partitions {
                    for broker in std::iter::once(p.leader).chain(p.isr.iter().copied()) {
                        if broker >= 0
                            && !state.sessions.contains_key(&broker)
                            && (p.leader == broker || p.isr.len() > 1)
                        {
                            dead.insert(broker);
                        }
                    }
                }
            }
        }
        for broker in dead {
            tracing::warn!(broker, timeout = ?timeout, "broker session expired; fencing it");
            self.fence(&mut state, broker).await?;
        }
        Ok(())
    }

    /// Takes a broker out of service: out of every ISR it shares, and leaderships it held go
    /// to other in-sync replicas (or, where the topic allows it, to any live replica).
    async fn fence(&self, state: &mut State, broker: i32) -> Result<(), ControllerError> {
        state.sessions.remove(&broker);
        state.snapshot.brokers.remove(&broker);
        let eligible = state.eligible();
        let unclean = self.unclean_topics(state);
        self.change_partitions(state, |topic, _, p| {
            election::remove_broker(
                p,
                broker,
                &|r| eligible.contains(&r),
                unclean.contains(&topic.name),
            )
        })
        .await?;
        self.publish(state);
        Ok(())
    }

    /// A broker about to stop: its leaderships move to other in-sync replicas and it leaves
    /// the ISRs it shares. Returns how many partitions it still leads (no other in-sync
    /// replica could take them); it may call again.
    pub async fn controlled_shutdown(&self, broker: i32) -> Result<u32, ControllerError> {
        let mut state = self.lock().await?;
        let Some(session) = state.sessions.get_mut(&broker) else {
            return Err(ControllerError::NoSession(broker));
        };
        session.shutting_down = true;
        let eligible = state.eligible();
        let changed = self
            .change_partitions(&mut state, |_, _, p| {
                election::retire_broker(p, broker, &|r| eligible.contains(&r))
            })
            .await?;
        if changed {
            self.publish(&mut state);
        }
        let remaining = state
            .snapshot
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == broker)
            .count();
        tracing::info!(broker, remaining, "controlled shutdown: leaderships moved");
        Ok(remaining as u32)
    }
}
