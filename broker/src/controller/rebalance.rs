//! Moving replicas: rebalance plans, cordoned brokers, the broker count (scaling), the
//! reassignment tick that moves a plan on, preferred-leader elections and self-healing.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use super::{
    BROKER_COUNT_KEY, Balance, CORDONED_KEY, Controller, ControllerError, MetadataStore,
    REASSIGNMENT_KEY, SCALE_ADVICE, ScaleDecision, ScalePhase, State, balancer, election,
    reassignment, scaling,
};
use crate::TopicPartition;
use crate::metadata::{Move, Plan};

impl State {
    /// How many brokers there are: one more than the highest id in session or holding
    /// replicas.
    fn running_brokers(&self) -> i32 {
        self.present_brokers().last().map_or(0, |b| b + 1)
    }

    /// The decision for the broker count asked for with `scale`.
    fn scale_decision(&self, desired: i32) -> ScaleDecision {
        self.decide_scale(desired, self.running_brokers(), true, SCALE_ADVICE)
    }

    /// [`scaling::decide`] on this metadata; a rebalance is asked for only when the
    /// balancer would move something.
    fn decide_scale(
        &self,
        desired: i32,
        running: i32,
        auto_rebalance: bool,
        ask: &str,
    ) -> ScaleDecision {
        let plan = self.plan_with_progress();
        let decide = |balance| {
            scaling::decide(
                desired,
                running,
                &self.snapshot,
                &plan,
                auto_rebalance,
                ask,
                balance,
            )
        };
        let decision = decide(Balance::Unknown);
        if decision.rebalance && self.rebalance_moves().is_empty() {
            return decide(Balance::Balanced);
        }
        decision
    }

    /// The moves a rebalance would make now.
    fn rebalance_moves(&self) -> Vec<Move> {
        let current = self.assignment();
        balancer::balance(&self.placeable(), &current)
            .into_iter()
            .filter(|(key, replicas)| current.get(key) != Some(replicas))
            .map(|((topic, partition), target)| Move {
                original: current[&(topic.clone(), partition)].clone(),
                topic,
                partition,
                target,
                started: false,
            })
            .collect()
    }

    /// Brokers in session or holding replicas.
    fn present_brokers(&self) -> BTreeSet<i32> {
        let holding = self.snapshot.load().into_keys();
        holding
            .chain(self.snapshot.brokers.keys().copied())
            .collect()
    }

    /// The plan with what its new replicas still have to copy: for each one, what its
    /// partition's leader holds less what it holds already.
    fn plan_with_progress(&self) -> Plan {
        let mut plan = self.plan.0.clone();
        let size = |broker: i32, topic: &str, partition: u32| {
            let tp = TopicPartition::new(topic, partition);
            self.replica_sizes.get(&broker)?.get(&tp).copied()
        };
        plan.bytes_remaining = plan
            .moves
            .iter()
            .flat_map(|m| {
                let leader = self
                    .snapshot
                    .topics
                    .get(&m.topic)
                    .and_then(|t| t.partitions.get(m.partition as usize))
                    .map_or(-1, |p| p.leader);
                let full = size(leader, &m.topic, m.partition)
                    .or_else(|| {
                        m.original
                            .iter()
                            .find_map(|r| size(*r, &m.topic, m.partition))
                    })
                    .unwrap_or(0);
                m.target
                    .iter()
                    .filter(|r| !m.original.contains(r))
                    .map(move |r| full.saturating_sub(size(*r, &m.topic, m.partition).unwrap_or(0)))
                    .collect::<Vec<_>>()
            })
            .sum();
        plan
    }
}

impl<S: MetadataStore> Controller<S> {
    /// Computes a rebalance: replica and leader counts per broker within one of each other,
    /// rack-aware, moving as few replicas as possible, and every replica off brokers that
    /// may not hold any (out of session, shutting down, cordoned). Unless `dry_run`, starts
    /// it. Refused while another is in progress.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Plan, ControllerError> {
        let mut state = self.lock().await?;
        self.rebalance_locked(&mut state, dry_run).await
    }

    async fn rebalance_locked(
        &self,
        state: &mut State,
        dry_run: bool,
    ) -> Result<Plan, ControllerError> {
        if !state.plan.0.moves.is_empty() {
            let plan = &state.plan.0;
            return Err(ControllerError::RebalanceInProgress {
                done: plan.done,
                total: plan.total,
            });
        }
        let moves = state.rebalance_moves();
        let plan = Plan {
            total: moves.len(),
            moves,
            done: 0,
            rolled_back: 0,
            max_concurrent: self.config.read().max_concurrent_moves.max(1),
            bytes_remaining: 0,
        };
        if dry_run || plan.moves.is_empty() {
            return Ok(plan);
        }
        tracing::info!(moves = plan.total, "rebalance started");
        self.put_plan(state, plan.clone()).await?;
        self.advance_locked(state).await?;
        Ok(plan)
    }

    /// The rebalance in progress (no moves when none), with the bytes it still has to copy.
    pub async fn rebalance_status(&self) -> Result<Plan, ControllerError> {
        Ok(self.lock().await?.plan_with_progress())
    }

    /// What a broker reported its replicas hold, in bytes (with its heartbeats): how a
    /// rebalance's bytes remaining are worked out. Kept in memory only.
    pub async fn report_replica_sizes(
        &self,
        broker: i32,
        sizes: Vec<(TopicPartition, u64)>,
    ) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        state
            .replica_sizes
            .insert(broker, sizes.into_iter().collect());
        Ok(())
    }

    /// Brokers that take no new replicas: new topics and rebalances leave them out, and a
    /// rebalance moves their replicas away (draining them before they are removed).
    pub async fn cordon(&self, brokers: BTreeSet<i32>) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        self.cordon_locked(&mut state, brokers).await
    }

    async fn cordon_locked(
        &self,
        state: &mut State,
        brokers: BTreeSet<i32>,
    ) -> Result<(), ControllerError> {
        if state.cordoned.0 == brokers {
            return Ok(());
        }
        let version = self
            .store_put(CORDONED_KEY, &brokers, state.cordoned.1)
            .await?;
        tracing::info!(?brokers, "cordoned brokers");
        state.cordoned = (brokers, Some(version));
        Ok(())
    }

    pub async fn cordoned(&self) -> Result<BTreeSet<i32>, ControllerError> {
        Ok(self.lock().await?.cordoned.0.clone())
    }

    /// Asks for `brokers` brokers, ids 0 to `brokers - 1` (`tributary cluster scale`). A
    /// shrink cordons the brokers that go and drains them; a growth rebalances once the new
    /// brokers have registered. Whoever runs the brokers (`tributary local up`) starts and
    /// stops them as [`Controller::scale_status`] says. Refused, changing nothing, when a
    /// topic keeps more replicas than `brokers`, or when the broker count is set elsewhere.
    pub async fn scale(&self, brokers: i32) -> Result<ScaleDecision, ControllerError> {
        if let Some(set_by) = self.config.read().broker_count_set_by.clone() {
            return Err(ControllerError::ScaleRefused(format!(
                "this cluster's broker count is set by {set_by}; change it there"
            )));
        }
        if brokers < 1 {
            return Err(ControllerError::ScaleRefused(format!(
                "cannot scale to {brokers} brokers: a cluster needs at least one"
            )));
        }
        let mut state = self.lock().await?;
        let running = state.running_brokers();
        let present = state.present_brokers();
        if present.len() as i32 != running {
            let ids: Vec<String> = present.iter().map(i32::to_string).collect();
            return Err(ControllerError::ScaleRefused(format!(
                "`scale` works on brokers numbered 0 to N-1, as `tributary local up` runs them; this cluster has broker(s) {} in session or holding replicas. Move replicas with `tributary cluster cordon` and `rebalance` instead",
                ids.join(", ")
            )));
        }
        if let Some(why) = scaling::refusal(brokers, running, &state.snapshot, SCALE_ADVICE) {
            return Err(ControllerError::ScaleRefused(why));
        }
        // Growing again: the brokers a shrink cordoned stay, so they take replicas again.
        if let Some(before) = state.broker_count.0
            && brokers > before
        {
            let kept: BTreeSet<i32> = state
                .cordoned
                .0
                .iter()
                .copied()
                .filter(|b| !(before..brokers).contains(b))
                .collect();
            self.cordon_locked(&mut state, kept).await?;
        }
        if state.broker_count.0 != Some(brokers) {
            let version = self
                .store_put(BROKER_COUNT_KEY, &brokers, state.broker_count.1)
                .await?;
            tracing::info!(brokers, running, "broker count changed");
            state.broker_count = (Some(brokers), Some(version));
        }
        let decision = self.apply_scale_locked(&mut state).await?;
        Ok(decision.unwrap_or_else(|| state.scale_decision(brokers)))
    }

    /// What `desired` brokers mean when `running` exist (ids 0 to `running - 1`), for a
    /// host that sets the broker count itself (the operator, from a Cluster's
    /// `spec.replicas`); `ask` is how its users ask for a count, for the advice when a shrink
    /// is refused. A rebalance is asked for only when the balancer would move something.
    pub async fn decide_scale(
        &self,
        desired: i32,
        running: i32,
        auto_rebalance: bool,
        ask: &str,
    ) -> Result<ScaleDecision, ControllerError> {
        let state = self.lock().await?;
        Ok(state.decide_scale(desired, running, auto_rebalance, ask))
    }

    /// The broker count asked for with [`Controller::scale`] and where it stands; None when
    /// it was never asked for.
    pub async fn scale_status(&self) -> Result<Option<(i32, ScaleDecision)>, ControllerError> {
        if self.config.read().broker_count_set_by.is_some() {
            return Ok(None);
        }
        let state = self.lock().await?;
        Ok(state
            .broker_count
            .0
            .map(|desired| (desired, state.scale_decision(desired))))
    }

    /// Cordons the brokers that go and starts the rebalance that drains them (or fills new
    /// ones), for the broker count asked for; cordons of brokers that stay are kept.
    async fn apply_scale_locked(
        &self,
        state: &mut State,
    ) -> Result<Option<ScaleDecision>, ControllerError> {
        let Some(desired) = state.broker_count.0 else {
            return Ok(None);
        };
        if self.config.read().broker_count_set_by.is_some() {
            // Set elsewhere (a Cluster's spec.replicas): a stored count is not followed.
            return Ok(None);
        }
        let decision = state.scale_decision(desired);
        if decision.phase == ScalePhase::ScaleDownRefused || self.still_registering(state) {
            return Ok(Some(decision));
        }
        let cordon: BTreeSet<i32> = state
            .cordoned
            .0
            .iter()
            .copied()
            .filter(|b| *b < desired)
            .chain(decision.cordon.iter().copied())
            .collect();
        self.cordon_locked(state, cordon).await?;
        if decision.rebalance {
            match self.rebalance_locked(state, false).await {
                Ok(_) | Err(ControllerError::RebalanceInProgress { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Some(decision))
    }

    async fn put_plan(&self, state: &mut State, plan: Plan) -> Result<(), ControllerError> {
        let version = self
            .store_put(REASSIGNMENT_KEY, &plan, state.plan.1)
            .await?;
        state.plan = (plan, Some(version));
        Ok(())
    }

    /// Takes the next step of every move in flight, and starts moves up to the limit.
    /// Partition changes are stored before they are published, and the plan after them, so
    /// a controller that restarts in between finds each move where it was.
    pub async fn advance_reassignments(&self) -> Result<(), ControllerError> {
        let mut state = self.lock().await?;
        self.advance_locked(&mut state).await
    }

    /// Just after a (re)start brokers are still registering: one not back yet is not gone,
    /// so no move is judged (or rolled back, or started) until they have had their chance.
    fn still_registering(&self, state: &State) -> bool {
        self.started.elapsed() < self.session_timeout()
            && state
                .incarnations
                .keys()
                .any(|b| !state.registered.contains(b))
    }

    async fn advance_locked(&self, state: &mut State) -> Result<(), ControllerError> {
        if state.plan.0.moves.is_empty() {
            return Ok(());
        }
        if self.still_registering(state) {
            return Ok(());
        }
        let mut plan = state.plan.0.clone();
        let limit = plan.max_concurrent.max(1);
        let in_flight = plan.moves.iter().filter(|m| m.started).count();
        for m in plan
            .moves
            .iter_mut()
            .filter(|m| !m.started)
            .take(limit.saturating_sub(in_flight))
        {
            m.started = true;
        }
        let started: BTreeMap<(String, u32), Move> = plan
            .moves
            .iter()
            .filter(|m| m.started)
            .map(|m| ((m.topic.clone(), m.partition), m.clone()))
            .collect();
        let eligible = state.eligible();
        let mut steps: BTreeMap<(String, u32), reassignment::Step> = BTreeMap::new();
        let changed = self
            .change_partitions(state, |topic, i, p| {
                let Some(m) = started.get(&(topic.name.clone(), i)) else {
                    return false;
                };
                let before = p.clone();
                let step = reassignment::advance(p, m, &|b| eligible.contains(&b));
                steps.insert((topic.name.clone(), i), step);
                *p != before
            })
            .await?;
        let topics = &state.snapshot.topics;
        plan.moves.retain(|m| {
            match steps.get(&(m.topic.clone(), m.partition)) {
                Some(reassignment::Step::Done) => {
                    plan.done += 1;
                    false
                }
                Some(reassignment::Step::RolledBack) => {
                    plan.rolled_back += 1;
                    false
                }
                // A partition that no longer exists (its topic was deleted) has nothing
                // left to move.
                _ => topics
                    .get(&m.topic)
                    .is_some_and(|t| (m.partition as usize) < t.partitions.len()),
            }
        });
        if changed {
            self.publish(state);
        }
        if plan != state.plan.0 {
            if plan.moves.is_empty() {
                tracing::info!(
                    done = plan.done,
                    rolled_back = plan.rolled_back,
                    "rebalance finished"
                );
            }
            self.put_plan(state, plan).await?;
        }
        Ok(())
    }

    /// Every `preferred_leader_interval`, and never during a rebalance (which moves
    /// leadership itself), hands leadership back to preferred leaders that are in sync.
    async fn elect_preferred_leaders(&self) -> Result<(), ControllerError> {
        let Some(interval) = self.config.read().preferred_leader_interval else {
            return Ok(());
        };
        let mut state = self.lock().await?;
        if state.last_preferred_election.elapsed() < interval || !state.plan.0.moves.is_empty() {
            return Ok(());
        }
        state.last_preferred_election = Instant::now();
        let eligible = state.eligible();
        let changed = self
            .change_partitions(&mut state, |_, _, p| {
                election::elect_preferred(p, &|b| eligible.contains(&b))
            })
            .await?;
        if changed {
            tracing::info!("leadership handed back to preferred leaders");
            self.publish(&mut state);
        }
        Ok(())
    }

    /// What the host of a controller calls every [`SESSION_CHECK_INTERVAL`]: fences brokers
    /// whose sessions expired, moves the rebalance on, and (with self-healing) starts one
    /// when a broker holding replicas has been gone longer than allowed.
    pub async fn tick(&self) -> Result<(), ControllerError> {
        self.expire_sessions().await?;
        self.advance_reassignments().await?;
        self.elect_preferred_leaders().await?;
        self.apply_scale_locked(&mut *self.lock().await?).await?;
        let Some(after) = self.config.read().self_healing_after else {
            return Ok(());
        };
        let mut state = self.lock().await?;
        let holding: BTreeSet<i32> = state.assignment().into_values().flatten().collect();
        let now = Instant::now();
        let present: BTreeSet<i32> = state.sessions.keys().copied().collect();
        state
            .gone_since
            .retain(|b, _| holding.contains(b) && !present.contains(b));
        for broker in holding.difference(&present) {
            state.gone_since.entry(*broker).or_insert(now);
        }
        let overdue: Vec<i32> = state
            .gone_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .map(|(b, _)| *b)
            .collect();
        if overdue.is_empty() || !state.plan.0.moves.is_empty() {
            return Ok(());
        }
        tracing::warn!(brokers = ?overdue, ?after, "brokers gone too long; re-creating their replicas on the others");
        let plan = self.rebalance_locked(&mut state, false).await?;
        if plan.moves.is_empty() {
            // Nowhere to put them (too few brokers): look again later, not every tick.
            for b in overdue {
                state.gone_since.insert(b, now);
            }
        }
        Ok(())
    }
}
