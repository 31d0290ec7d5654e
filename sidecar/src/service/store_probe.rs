//! The store half of `/ready` (admin `Readiness::set_store_reachable`): a cheap request to
//! the store at startup and then periodically — a STAT of a key that does not exist. Any
//! answer from the store (NOT_FOUND, or even a permission error) means it is reachable; only a
//! transient failure (connection refused/reset, timeout, 5xx, 429) or no answer within
//! `PROBE_TIMEOUT` counts as unreachable. The probe bypasses the configured retries by its own
//! timeout, so `/ready` follows an outage within seconds rather than after the retry budget.

use std::sync::Arc;
use std::time::Duration;

use shmpipe_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::service::admin::Readiness;

/// Between probes while the store answers.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Between probes while it does not.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A key no one writes (a valid key, so it reaches the backend).
const PROBE_KEY: &str = ".shmpipe-readiness-probe";

/// Whether the store answered a probe.
pub async fn probe(store: &Store) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.stat(PROBE_KEY)).await {
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        Ok(Ok(_)) | Ok(Err(StoreError::NotFound { .. })) => Ok(()),
        Ok(Err(e)) if e.is_transient() => Err(e.to_string()),
        // The store answered (e.g. access denied for a missing key): it is reachable; the
        // failure will show on real requests.
        Ok(Err(_)) => Ok(()),
    }
}

/// Probes until `stop`, keeping `readiness` up to date; logs each change.
pub async fn run(store: Store, readiness: Arc<Readiness>, stop: CancellationToken) {
    let mut reachable: Option<bool> = None;
    loop {
        let now = probe(&store).await;
        let ok = now.is_ok();
        if reachable != Some(ok) {
            match &now {
                Ok(()) => tracing::info!(store = store.describe(), "store reachable"),
                Err(e) => tracing::warn!(store = store.describe(), error = %e, "store unreachable"),
            }
            readiness.set_store_reachable(ok);
            reachable = Some(ok);
        }
        let wait = if ok { PROBE_EVERY } else { RETRY_EVERY };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_answers_and_a_closed_port_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&shmpipe_store::StoreConfig::new(&url, Default::default()).unwrap()).unwrap();
        assert_eq!(probe(&store).await, Ok(()));

        // Nothing listens on this port: connection refused, no retries.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut o = shmpipe_store::StoreOptions {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            allow_http: Some(true),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        o.retry.max_retries = 0;
        let store = Store::open(&shmpipe_store::StoreConfig::new("s3://bucket", o).unwrap()).unwrap();
        assert!(probe(&store).await.is_err());
    }
}
