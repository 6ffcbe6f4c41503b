//! The operator's Prometheus metrics: reconciles, their errors and durations per kind, and
//! whether this replica leads and how many cluster controllers it hosts.

use std::future::Future;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Cluster controllers running here.
    pub controllers: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("tributary_operator".into()), None).expect("valid prefix");
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles run, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that failed, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "How long reconciles take").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")
            .expect("valid metric");
        let controllers = IntGauge::new("cluster_controllers", "Cluster controllers hosted here")
            .expect("valid metric");
        for metric in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(leader.clone()),
            Box::new(controllers.clone()),
        ] {
            registry.register(metric).expect("metric registers once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            controllers,
        }
    }

    /// Runs one reconcile of `kind`, counting it, its failure and its duration.
    pub async fn measure<T, E>(
        &self,
        kind: &str,
        reconcile: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = reconcile.await;
        self.reconciles.with_label_values(&[kind]).inc();
        if result.is_err() {
            self.errors.with_label_values(&[kind]).inc();
        }
        self.duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reconciles_errors_and_durations_are_counted_per_kind() {
        let metrics = Metrics::new();
        metrics
            .measure("cluster", async { Ok::<_, ()>(()) })
            .await
            .unwrap();
        metrics
            .measure("topic", async { Err::<(), _>("no") })
            .await
            .unwrap_err();
        let text = metrics.render();
        assert!(
            text.contains("tributary_operator_reconciles_total{kind=\"cluster\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tributary_operator_reconcile_errors_total{kind=\"topic\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tributary_operator_reconcile_duration_seconds_count{kind=\"topic\"} 1"),
            "{text}"
        );
    }
}
