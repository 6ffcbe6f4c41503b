//! Waiting with a deadline. Every wait names what it waits for and, when it times out,
//! says so together with the last state it saw.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;

/// How often a condition is checked again.
const POLL: Duration = Duration::from_secs(2);

/// One look at what is being waited for.
#[derive(Debug)]
pub enum Check<T> {
    Done(T),
    /// Not yet: what it looks like now, for the timeout message.
    Waiting(String),
}

/// Checks every two seconds until `check` is done or `timeout` has passed. An error from
/// `check` counts as "not yet" (pods restart, brokers move), and is reported as the last
/// state if the wait times out.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T>>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last = match tokio::time::timeout(remaining.max(POLL), check()).await {
            Ok(Ok(Check::Done(value))) => {
                println!("{what}: done after {:.0}s", started.elapsed().as_secs_f64());
                return Ok(value);
            }
            Ok(Ok(Check::Waiting(state))) => state,
            Ok(Err(error)) => format!("error: {error:#}"),
            Err(_) => "the check itself did not finish".to_string(),
        };
        if tokio::time::Instant::now() + POLL > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_times_out_says_what_it_waited_for_and_what_it_saw() {
        let error = until(
            "the cluster demo to be Ready",
            Duration::from_secs(10),
            || async { Ok(Check::<()>::Waiting("2 of 3 brokers ready".into())) },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("waiting for the cluster demo to be Ready")
                && error.contains("last seen: 2 of 3 brokers ready"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_count_as_not_yet() {
        let mut calls = 0;
        let value = until("three calls", Duration::from_secs(60), || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 => anyhow::bail!("connection refused"),
                    2 => Ok(Check::Waiting("one more".into())),
                    _ => Ok(Check::Done(n)),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }
}
