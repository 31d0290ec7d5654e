//! Store configuration: which backend (from the store URL) and how to talk to it (options).
//! The sidecar fills [`StoreOptions`] from its flags/env (that mapping lives in the sidecar's
//! config module); S3 settings left unset fall back to the standard `AWS_*` environment
//! variables (the backend module applies them).
//!
//! URLs:
//! - `file:///abs/path` — objects are files under that directory (created if missing);
//! - `s3://bucket[/prefix]` — objects are keys under `prefix/` in `bucket`;
//! - `memory://` — an in-process store, for tests (each `Store::open` gets a fresh one).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;

/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload; with the default part size that is ~78 GiB per object.
pub const MAX_PARTS: usize = 10_000;

/// Which backend a store URL selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///abs/path`
    File { root: PathBuf },
    /// `s3://bucket[/prefix]` (prefix without leading/trailing `/`, possibly empty)
    S3 { bucket: String, prefix: String },
    /// `memory://`
    Memory,
}

impl StoreUrl {
    /// Parses a store URL.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Config(format!("store URL {url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("query and fragment are not allowed"));
        }
        match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(bad("file URLs name no host: use file:///absolute/path"));
                }
                let root = parsed.to_file_path().map_err(|_| bad("not an absolute path"))?;
                if root.as_os_str().len() <= 1 {
                    return Err(bad("refusing to use / as the store root"));
                }
                Ok(Self::File { root })
            }
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default().to_owned();
                if bucket.is_empty() {
                    return Err(bad("missing bucket: use s3://bucket/prefix"));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
                    return Err(bad("credentials and endpoint go in the options, not the URL"));
                }
                let raw = parsed.path().trim_matches('/');
                let prefix = percent_encoding::percent_decode_str(raw)
                    .decode_utf8()
                    .map_err(|_| bad("prefix is not UTF-8"))?
                    .into_owned();
                if !prefix.is_empty() {
                    object_store::path::Path::parse(&prefix)
                        .map_err(|e| bad(&format!("bad prefix: {e}")))?;
                }
                Ok(Self::S3 { bucket, prefix })
            }
            "memory" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) || !matches!(parsed.path(), "" | "/") {
                    return Err(bad("memory URLs take no name or path: use memory://"));
                }
                Ok(Self::Memory)
            }
            other => Err(bad(&format!("unknown scheme {other:?} (want file, s3 or memory)"))),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { root } => write!(f, "file://{}", root.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Memory => write!(f, "memory://"),
        }
    }
}

/// Retry and timeout settings, passed to object_store's HTTP client (S3 only: local files
/// and memory do not retry). object_store retries a request on connection errors, 5xx, 429
/// and (for idempotent requests: GET, PUT of a part/object) timeouts, with exponential
/// backoff and jitter, until `max_retries` or `retry_timeout` (measured from the first
/// attempt) runs out; a GET whose body breaks mid-stream is resumed with a range request as
/// long as the ETag is unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOptions {
    /// Retries per request (0 = none).
    pub max_retries: usize,
    /// First backoff.
    pub init_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Backoff growth factor.
    pub backoff_base: f64,
    /// No retry is started later than this after the request's first attempt.
    pub retry_timeout: Duration,
    /// Whole-request timeout (connect to end of body). Long GET streams that outlive it are
    /// resumed by a retry (which needs retries left within `retry_timeout`).
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_retries: 10,
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            backoff_base: 2.0,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// How to reach and use the store. `None` S3 fields fall back to the `AWS_*` environment.
#[derive(Clone, PartialEq)]
pub struct StoreOptions {
    /// S3 endpoint URL (S3-compatible servers); env `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// S3 region; env `AWS_REGION`/`AWS_DEFAULT_REGION`; object_store's default is us-east-1.
    pub region: Option<String>,
    /// Allow plain `http://` endpoints; env `AWS_ALLOW_HTTP`.
    pub allow_http: Option<bool>,
    /// Path-style addressing (`endpoint/bucket/key`, what most S3-compatible servers want)
    /// instead of virtual-hosted (`bucket.endpoint/key`); env
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`; object_store's default is path-style.
    pub path_style: Option<bool>,
    /// Env `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Env `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Env `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
    /// Send `UNSIGNED-PAYLOAD` instead of hashing every payload byte into the SigV4
    /// signature (object_store's default is to hash: one extra read of each slot, no copy);
    /// env `AWS_UNSIGNED_PAYLOAD`. Safe over TLS; the trailer checksum still guards the data.
    pub unsigned_payload: Option<bool>,
    /// Retries and timeouts.
    pub retry: RetryOptions,
    /// Multipart part size (S3: at least [`MIN_PART_SIZE`]). All parts but the last have
    /// exactly this size. A writer pins up to `part_size * (max_parts_in_flight + 1)` bytes of
    /// slots.
    pub part_size: usize,
    /// Parts of one writer uploading at once; `write` waits when the budget is used.
    pub max_parts_in_flight: usize,
    /// Size of the chunks a reader hands out from `file://` (other backends deliver what the
    /// network gives).
    pub read_chunk_size: usize,
    /// Upload and download limits in bytes per second (`None`: none); see ratelimit.rs.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    /// `file://`: fsync files and directories before a put/commit returns (durable objects).
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            allow_http: None,
            path_style: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            unsigned_payload: None,
            retry: RetryOptions::default(),
            part_size: 8 * 1024 * 1024,
            max_parts_in_flight: 4,
            read_chunk_size: 1024 * 1024,
            limit_upload: None,
            limit_download: None,
            fsync: true,
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("unsigned_payload", &self.unsigned_payload)
            .field("retry", &self.retry)
            .field("part_size", &self.part_size)
            .field("max_parts_in_flight", &self.max_parts_in_flight)
            .field("read_chunk_size", &self.read_chunk_size)
            .field("limit_upload", &self.limit_upload)
            .field("limit_download", &self.limit_download)
            .field("fsync", &self.fsync)
            .finish()
    }
}

/// A validated store URL plus options.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// The backend.
    pub url: StoreUrl,
    /// How to use it.
    pub options: StoreOptions,
}

impl StoreConfig {
    /// Parses `url` and checks `options`.
    pub fn new(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let url = StoreUrl::parse(url)?;
        let o = &options;
        let min_part = if matches!(url, StoreUrl::S3 { .. }) { MIN_PART_SIZE } else { 1 };
        if o.part_size < min_part || o.part_size > MAX_PART_SIZE {
            return Err(StoreError::Config(format!(
                "part size {} outside {min_part}..={MAX_PART_SIZE}",
                o.part_size
            )));
        }
        if o.max_parts_in_flight == 0 || o.max_parts_in_flight > 64 {
            return Err(StoreError::Config(format!(
                "max parts in flight {} outside 1..=64",
                o.max_parts_in_flight
            )));
        }
        if o.read_chunk_size == 0 || o.read_chunk_size > 64 * 1024 * 1024 {
            return Err(StoreError::Config(format!(
                "read chunk size {} outside 1..=64 MiB",
                o.read_chunk_size
            )));
        }
        if !(o.retry.backoff_base >= 1.0 && o.retry.backoff_base.is_finite()) {
            return Err(StoreError::Config("backoff base must be >= 1".into()));
        }
        if o.retry.request_timeout.is_zero() || o.retry.connect_timeout.is_zero() {
            return Err(StoreError::Config("timeouts must be positive".into()));
        }
        if let Some(ep) = &o.endpoint {
            let u = url::Url::parse(ep).map_err(|e| StoreError::Config(format!("endpoint {ep:?}: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(StoreError::Config(format!("endpoint {ep:?}: want http(s)://")));
            }
        }
        Ok(Self { url, options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        assert_eq!(
            StoreUrl::parse("file:///var/lib/shmpipe").unwrap(),
            StoreUrl::File { root: "/var/lib/shmpipe".into() }
        );
        assert_eq!(
            StoreUrl::parse("file:///tmp/a%20b/").unwrap(),
            StoreUrl::File { root: "/tmp/a b/".into() }
        );
        assert_eq!(
            StoreUrl::parse("s3://bkt/some/prefix/").unwrap(),
            StoreUrl::S3 { bucket: "bkt".into(), prefix: "some/prefix".into() }
        );
        assert_eq!(
            StoreUrl::parse("s3://bkt").unwrap(),
            StoreUrl::S3 { bucket: "bkt".into(), prefix: String::new() }
        );
        assert_eq!(StoreUrl::parse("memory://").unwrap(), StoreUrl::Memory);
        assert_eq!(StoreUrl::parse("s3://bkt/p").unwrap().to_string(), "s3://bkt/p");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "relative/path",
            "file://host/x",
            "file:///",
            "s3:///prefix",
            "s3://user:pw@bkt/p",
            "s3://bkt:9000/p",
            "s3://bkt/a//b",
            "s3://bkt/p?x=1",
            "memory://name",
            "gs://bkt",
        ] {
            let e = StoreUrl::parse(bad).expect_err(bad);
            assert_eq!(e.code(), "SHMPIPE_E_MALFORMED", "{bad}: {e}");
        }
    }

    #[test]
    fn checks_options() {
        let ok = StoreConfig::new("s3://b", StoreOptions::default()).unwrap();
        assert_eq!(ok.options.part_size, 8 << 20);
        let small = StoreOptions { part_size: 1 << 20, ..Default::default() };
        assert!(StoreConfig::new("s3://b", small.clone()).is_err(), "S3 needs >= 5 MiB parts");
        assert!(StoreConfig::new("memory://", small).is_ok(), "other backends take any size");
        let zero = StoreOptions { max_parts_in_flight: 0, ..Default::default() };
        assert!(StoreConfig::new("memory://", zero).is_err());
        let ep = StoreOptions { endpoint: Some("ftp://x".into()), ..Default::default() };
        assert!(StoreConfig::new("s3://b", ep).is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let o = StoreOptions {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..Default::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("hunter2") && !s.contains("tok\""), "{s}");
    }
}
