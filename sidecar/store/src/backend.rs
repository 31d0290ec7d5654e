//! Builds the object_store backend a [`StoreConfig`] names, and records what the rest of the
//! crate must know about it: whether it keeps the `Bytes` it is handed (memory://, which would
//! pin slots forever), whether its listings come sorted, and, for file://, the filesystem
//! handle that readers use to `pread` straight into slots.
//!
//! S3 settings: the standard `AWS_*` environment variables first (the same keys object_store's
//! `AmazonS3Builder::from_env` reads: access key, secret, session token, region, endpoint,
//! allow-http, web identity / container credentials, …), then every `Some` option on top.
//! Without static credentials object_store falls back to web-identity, container and instance
//! metadata credentials.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::config::{StoreConfig, StoreOptions, StoreUrl};
use crate::error::StoreError;

/// An opened backend.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub store: Arc<dyn ObjectStore>,
    /// file:// only: direct access for zero-extra-copy reads.
    pub local: Option<Arc<LocalFileSystem>>,
    /// The backend keeps the payload `Bytes` alive after a put (memory://): the store layer
    /// must copy into owned buffers first so slot leases are released.
    pub retains_payload: bool,
    /// `list` yields keys in lexicographic order (S3, memory); file:// walks directories in
    /// filesystem order and must be sorted for paging.
    pub sorted_list: bool,
}

pub(crate) fn build(
    config: &StoreConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Backend, StoreError> {
    let cfg_err = |e: object_store::Error| StoreError::Config(e.to_string());
    match &config.url {
        StoreUrl::File { root } => {
            std::fs::create_dir_all(root).map_err(|e| {
                StoreError::Config(format!("cannot create store directory {}: {e}", root.display()))
            })?;
            let fs = LocalFileSystem::new_with_prefix(root)
                .map_err(cfg_err)?
                .with_automatic_cleanup(true)
                .with_fsync(config.options.fsync);
            let fs = Arc::new(fs);
            Ok(Backend {
                store: fs.clone(),
                local: Some(fs),
                retains_payload: false,
                sorted_list: false,
            })
        }
        StoreUrl::S3 { bucket, prefix } => {
            let s3 = s3_builder(bucket, &config.options, env).build().map_err(cfg_err)?;
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.as_str()))
            };
            Ok(Backend { store, local: None, retains_payload: false, sorted_list: true })
        }
        StoreUrl::Memory => Ok(Backend {
            store: Arc::new(InMemory::new()),
            local: None,
            retains_payload: true,
            sorted_list: true,
        }),
    }
}

/// The S3 builder: `AWS_*` variables from `env`, then the options.
pub(crate) fn s3_builder(
    bucket: &str,
    o: &StoreOptions,
    env: impl IntoIterator<Item = (String, String)>,
) -> AmazonS3Builder {
    // Retryable statuses come back typed (crate::transient), for StoreError::is_transient.
    let mut b = AmazonS3Builder::new().with_http_connector(crate::transient::ClassifyingConnector::default());
    for (k, v) in env {
        if k.starts_with("AWS_") {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                b = b.with_config(key, v);
            }
        }
    }
    b = b.with_bucket_name(bucket);
    if let Some(v) = &o.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &o.region {
        b = b.with_region(v);
    }
    if let Some(v) = o.allow_http {
        b = b.with_allow_http(v);
    }
    if let Some(v) = o.path_style {
        b = b.with_virtual_hosted_style_request(!v);
    }
    if let Some(v) = &o.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &o.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = &o.session_token {
        b = b.with_token(v);
    }
    if let Some(v) = o.unsigned_payload {
        b = b.with_unsigned_payload(v);
    }
    let r = &o.retry;
    b = b.with_retry(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: r.init_backoff,
            max_backoff: r.max_backoff,
            base: r.backoff_base,
        },
        max_retries: r.max_retries,
        retry_timeout: r.retry_timeout,
    });
    // Through with_config, not with_client_options, so env-sourced client settings survive.
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), ms(r.request_timeout))
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), ms(r.connect_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_is_the_fallback_and_options_win() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "env-key"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ENDPOINT_URL", "http://env:9000"),
            ("HOME", "/root"),
        ]);
        let b = s3_builder("bkt", &StoreOptions::default(), e.clone());
        let get = |b: &AmazonS3Builder, k| b.get_config_value(&k);
        assert_eq!(get(&b, AmazonS3ConfigKey::AccessKeyId).as_deref(), Some("env-key"));
        assert_eq!(get(&b, AmazonS3ConfigKey::SecretAccessKey).as_deref(), Some("env-secret"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Token).as_deref(), Some("env-token"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Region).as_deref(), Some("eu-west-3"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Endpoint).as_deref(), Some("http://env:9000"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Bucket).as_deref(), Some("bkt"));

        let o = StoreOptions {
            access_key_id: Some("opt-key".into()),
            secret_access_key: Some("opt-secret".into()),
            region: Some("us-west-2".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            path_style: Some(true),
            unsigned_payload: Some(true),
            ..Default::default()
        };
        let b = s3_builder("bkt", &o, e);
        assert_eq!(get(&b, AmazonS3ConfigKey::AccessKeyId).as_deref(), Some("opt-key"));
        assert_eq!(get(&b, AmazonS3ConfigKey::SecretAccessKey).as_deref(), Some("opt-secret"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Token).as_deref(), Some("env-token"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Region).as_deref(), Some("us-west-2"));
        assert_eq!(get(&b, AmazonS3ConfigKey::Endpoint).as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(get(&b, AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(), Some("false"));
        assert_eq!(get(&b, AmazonS3ConfigKey::UnsignedPayload).as_deref(), Some("true"));
    }
}
