//! Following the broker count asked for with `tributary cluster scale`: the controller
//! says how many brokers should run (the old count until the brokers that go are
//! drained), and `local up` starts the new ones or stops the drained ones, one at a time.

use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::time::Instant;
use tributary_broker::client::ClusterAdmin;

use super::{Plan, Processes, broker_spec};

/// How long to wait before starting a broker again after its start failed.
const RETRY_START_AFTER: Duration = Duration::from_secs(10);

impl Processes {
    /// Records the broker count: `--brokers` when given (whatever an earlier run was
    /// scaled to), else the count the cluster was last scaled to, else the brokers just
    /// started. Returns a note for the user when the count is not what was started.
    pub(super) async fn ask_for_brokers(
        &self,
        plan: &Plan,
        admin: &ClusterAdmin,
    ) -> Option<String> {
        if !plan.brokers_given {
            match admin.status().await {
                Ok(status) => match status.scale {
                    Some(scale) if scale.brokers != plan.brokers => {
                        return Some(format!(
                            "This cluster was scaled to {} brokers with `tributary cluster scale`; following that (--brokers sets another count).",
                            scale.brokers
                        ));
                    }
                    Some(_) => return None,
                    None => {}
                },
                Err(error) => return Some(format!("warning: cannot ask the controller: {error}")),
            }
        }
        match admin.scale(plan.brokers).await {
            Ok(_) => None,
            Err(error) => Some(format!(
                "warning: the controller refused {} brokers: {error}",
                plan.brokers
            )),
        }
    }

    /// Takes one step towards the broker count the controller says should run: starts the
    /// next broker, or stops the last one once it holds no replicas. Returns what it did.
    pub(super) async fn follow_scale(
        &mut self,
        plan: &Plan,
        admin: &ClusterAdmin,
    ) -> anyhow::Result<Option<String>> {
        let status = admin.status().await?;
        let Some(scale) = status.scale else {
            return Ok(None);
        };
        let (run, running) = (scale.run as usize, self.brokers.len());
        if run > running {
            if self
                .start_failed_at
                .is_some_and(|at| at.elapsed() < RETRY_START_AFTER)
            {
                return Ok(None);
            }
            let id = running as u32;
            let controller = self
                .controller_address
                .ok_or_else(|| anyhow!("the controller has not started"))?;
            let spec = broker_spec(plan, id, controller);
            let dir = spec.dir.clone();
            let (supervised, started) = self.supervise(spec);
            self.brokers.push(supervised);
            let started = match started.await {
                Ok(Ok(started)) => started,
                outcome => {
                    self.start_failed_at = Some(Instant::now());
                    if let Some(failed) = self.brokers.pop() {
                        let _ = failed.task.await;
                    }
                    let error = match outcome {
                        Ok(Err(error)) => error,
                        _ => anyhow!("its supervisor stopped"),
                    };
                    return Err(error).with_context(|| {
                        format!(
                            "cannot start broker {id} for `tributary cluster scale` (trying again in {}s; see {}, and `tributary cluster scale {id}` gives up on it)",
                            RETRY_START_AFTER.as_secs(),
                            dir.join("broker.log").display()
                        )
                    });
                }
            };
            self.start_failed_at = None;
            return Ok(Some(format!(
                "broker {id} started ({} of {} brokers): grpc {}, metrics http://{}/metrics, pid {}, data {}",
                id + 1,
                scale.brokers,
                started.addresses["grpc"],
                started.addresses["http"],
                started.pid,
                dir.display()
            )));
        }
        if run < running {
            let id = (running - 1) as i32;
            let holds = status
                .brokers
                .iter()
                .find(|b| b.id == id)
                .map_or(0, |b| b.replicas);
            if holds > 0 {
                // The controller's decision and its broker list are read together, so this
                // only happens if a replica landed there since; wait for the drain.
                return Ok(None);
            }
            let last = self.brokers.last_mut().context("no broker to stop")?;
            last.stop.cancel();
            let stopped = (&mut last.task).await;
            self.brokers.pop();
            let how = match stopped {
                Ok(super::supervisor::Stopped::Cleanly) => "cleanly".to_string(),
                Ok(super::supervisor::Stopped::Failed(why)) => why,
                Err(error) => format!("its supervisor failed: {error}"),
            };
            return Ok(Some(format!(
                "broker {id} stopped ({how}): it holds no replicas; {} broker(s) run, {} asked for",
                self.brokers.len(),
                scale.brokers
            )));
        }
        Ok(None)
    }
}
