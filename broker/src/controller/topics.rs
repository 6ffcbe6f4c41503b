//! Topics: creating them (with rack-aware, even placement), adding partitions, changing
//! their configuration, and deleting them.

use std::collections::BTreeMap;

use tokio::time::Instant;
use uuid::Uuid;

use super::{
    Controller, ControllerError, MAX_PARTITIONS, MetadataStore, State, placement, topic_key,
};
use crate::config::{ConfigError, TopicConfig};
use crate::metadata::{NewTopic, OFFSETS_TOPIC, PartitionRecord, TopicRecord};
use crate::validate_topic_name;

impl<S: MetadataStore> Controller<S> {
    /// Creates a topic, placing its replicas on live brokers so that replica and leader
    /// counts stay even across the cluster. With `validate_only` nothing is stored, but the
    /// answer is the same. Returns the topic and the metadata version that holds it.
    pub async fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
        if topic.name.starts_with("__") {
            return Err(ControllerError::InvalidTopic(format!(
                "'{}' starts with '__', which is reserved for internal topics",
                topic.name
            )));
        }
        self.create(topic, validate_only, false).await
    }

    /// Creates `__consumer_offsets`, the topic of committed offsets, unless it exists:
    /// replication factor 3 (or the number of brokers, if smaller), acks=all commits
    /// needing two in-sync replicas when there are three, and no retention (the group
    /// coordinators keep it small).
    pub async fn create_offsets_topic(&self) -> Result<TopicRecord, ControllerError> {
        if let Some(existing) = self.snapshot().topics.get(OFFSETS_TOPIC) {
            return Ok(existing.clone());
        }
        let topic = NewTopic {
            name: OFFSETS_TOPIC.into(),
            partitions: self.config.read().offsets_topic_partitions,
            replication_factor: None,
            config: BTreeMap::from([
                ("retention.ms".to_string(), "-1".to_string()),
                ("retention.bytes".to_string(), "-1".to_string()),
                ("segment.bytes".to_string(), (16 << 20).to_string()),
            ]),
        };
        match self.create(topic, false, true).await {
            Err(ControllerError::TopicExists(_)) => self
                .snapshot()
                .topics
                .get(OFFSETS_TOPIC)
                .cloned()
                .ok_or_else(|| ControllerError::TopicExists(OFFSETS_TOPIC.into())),
            other => other.map(|(record, _)| record),
        }
    }

    /// Creates a topic; an internal one gets a replication factor of up to 3, as many as
    /// there are brokers, and min.insync.replicas 2 when it has 3.
    async fn create(
        &self,
        mut topic: NewTopic,
        validate_only: bool,
        internal: bool,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        if topic.partitions == 0 || topic.partitions > MAX_PARTITIONS {
            return Err(ControllerError::InvalidPartitions(format!(
                "{} requested; a topic has from 1 to {MAX_PARTITIONS} partitions",
                topic.partitions
            )));
        }
        // Checked before waiting for brokers, so a bad config fails at once.
        TopicConfig::resolve(&self.config.read().topic_config, &topic.config)?;
        let replication_factor = topic
            .replication_factor
            .unwrap_or(self.config.read().default_replication_factor)
            as usize;
        let replication_factor = if internal { 3 } else { replication_factor };
        let mut state = self.lock_once_registered(replication_factor).await?;
        if state.snapshot.topics.contains_key(&topic.name) {
            return Err(ControllerError::TopicExists(topic.name));
        }
        let replication_factor = if internal {
            let rf = replication_factor.min(state.eligible().len());
            topic.config.insert(
                "min.insync.replicas".into(),
                if rf >= 3 { "2" } else { "1" }.into(),
            );
            rf
        } else {
            replication_factor
        };
        let partitions = place(&state, topic.partitions, replication_factor)?;
        self.check_config(&topic.config, replication_factor)?;
        let record = TopicRecord {
            name: topic.name.clone(),
            id: Uuid::new_v4(),
            config: topic.config,
            partitions,
        };
        if validate_only {
            return Ok((record, state.snapshot.version));
        }
        let published = self.put_topic(&mut state, record.clone()).await?;
        tracing::info!(topic = %record.name, partitions = record.partitions.len(), replication_factor, "topic created");
        Ok((record, published))
    }

    /// Grows a topic to `partitions` partitions, placing the new ones as a new topic's
    /// would be. Partitions are never removed: records are spread over them by key. Returns
    /// the topic and the metadata version that holds it.
    pub async fn create_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        let rf = self
            .snapshot()
            .topics
            .get(name)
            .map_or(1, TopicRecord::replication_factor);
        let mut state = self.lock_once_registered(rf).await?;
        let Some(mut topic) = state.snapshot.topics.get(name).cloned() else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        let current = topic.partitions.len() as u32;
        if partitions < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions and cannot shrink to {partitions}: \
                 records are spread over partitions by key, so partitions can only be added"
            )));
        }
        if partitions > MAX_PARTITIONS {
            return Err(ControllerError::InvalidPartitions(format!(
                "{partitions} requested; a topic has from 1 to {MAX_PARTITIONS} partitions"
            )));
        }
        if partitions == current {
            return Ok((topic, state.snapshot.version));
        }
        let added = place(&state, partitions - current, topic.replication_factor())?;
        topic.partitions.extend(added);
        let published = self.put_topic(&mut state, topic.clone()).await?;
        tracing::info!(
            topic = name,
            from = current,
            to = partitions,
            "partitions added"
        );
        Ok((topic, published))
    }

    /// Replaces a topic's configuration overrides with `config` (keys not in it return to
    /// the cluster defaults). Brokers apply the change when they receive the metadata.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(TopicRecord, u64), ControllerError> {
        let mut state = self.lock().await?;
        let Some(mut topic) = state.snapshot.topics.get(name).cloned() else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        if topic.config == config {
            return Ok((topic, state.snapshot.version));
        }
        self.check_config(&config, topic.replication_factor())?;
        topic.config = config;
        let published = self.put_topic(&mut state, topic.clone()).await?;
        tracing::info!(topic = name, config = ?topic.config, "topic config changed");
        Ok((topic, published))
    }

    /// Takes the state lock; just after a controller (re)start, while brokers are still
    /// registering, first waits for `replication_factor` of them (up to one session timeout
    /// since the start), if that many have ever registered.
    async fn lock_once_registered(
        &self,
        replication_factor: usize,
    ) -> Result<tokio::sync::MutexGuard<'_, State>, ControllerError> {
        let mut updates = self.subscribe();
        updates.borrow_and_update();
        let grace_end = self.started + self.session_timeout();
        loop {
            let state = self.lock().await?;
            let registering = state.eligible().len() < replication_factor
                && state.incarnations.len() >= replication_factor
                && Instant::now() < grace_end;
            if !registering {
                return Ok(state);
            }
            drop(state);
            let _ = tokio::time::timeout_at(grace_end, updates.changed()).await;
        }
    }

    /// Checks topic overrides against the cluster defaults and the replication factor.
    fn check_config(
        &self,
        config: &BTreeMap<String, String>,
        replication_factor: usize,
    ) -> Result<(), ControllerError> {
        let resolved = TopicConfig::resolve(&self.config.read().topic_config, config)?;
        if resolved.min_insync_replicas as usize > replication_factor {
            return Err(ControllerError::InvalidConfig(ConfigError(format!(
                "min.insync.replicas {} is larger than the replication factor {replication_factor}: no write with acks=all could succeed",
                resolved.min_insync_replicas
            ))));
        }
        Ok(())
    }

    /// Stores a new or changed topic record, then publishes it.
    async fn put_topic(
        &self,
        state: &mut State,
        record: TopicRecord,
    ) -> Result<u64, ControllerError> {
        let stored = state.topic_versions.get(&record.name).copied();
        let version = self
            .store_put(&topic_key(&record.name), &record, stored)
            .await?;
        state.topic_versions.insert(record.name.clone(), version);
        state.snapshot.topics.insert(record.name.clone(), record);
        Ok(self.publish(state))
    }

    /// Deletes a topic; brokers delete its partitions when they apply the change. Returns the
    /// metadata version without it.
    pub async fn delete_topic(&self, name: &str) -> Result<u64, ControllerError> {
        let mut state = self.lock().await?;
        let Some(&version) = state.topic_versions.get(name) else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        self.check_store(self.store.delete(&topic_key(name), version).await)?;
        state.topic_versions.remove(name);
        state.snapshot.topics.remove(name);
        tracing::info!(topic = name, "topic deleted");
        Ok(self.publish(&mut state))
    }
}

/// Places `count` new partitions of `replication_factor` replicas on the brokers that may
/// take them, keeping replica and leader counts even across the cluster (rack-aware).
fn place(
    state: &State,
    count: u32,
    replication_factor: usize,
) -> Result<Vec<PartitionRecord>, ControllerError> {
    let candidates = state.placeable();
    if candidates.is_empty() {
        return Err(ControllerError::InvalidReplicationFactor(
            "no broker is registered with the controller (or all are being drained); start brokers (or wait until they have registered) and try again".into(),
        ));
    }
    if replication_factor == 0 || replication_factor > candidates.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "{replication_factor} requested, but {} broker{} available; use a replication factor from 1 to {}",
            candidates.len(),
            if candidates.len() == 1 {
                " is"
            } else {
                "s are"
            },
            candidates.len()
        )));
    }
    let mut load = placement::Load::default();
    for p in state.snapshot.topics.values().flat_map(|t| &t.partitions) {
        load.add(&p.replicas);
    }
    Ok(
        placement::assign(&candidates, &mut load, count, replication_factor)
            .into_iter()
            .map(|replicas| PartitionRecord {
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect(),
    )
}
