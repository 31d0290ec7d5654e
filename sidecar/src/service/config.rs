//! Sidecar configuration: every knob, its flag and its `SHMPIPE_*` environment variable, in
//! one place (`/work/main/.tmp/contract.md`, "Names"). Flags override the environment.
//! `main` turns any error here into one line on stderr and exit code 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use shm_protocol::layout::{MAX_RING_CAPACITY, MAX_SLOT_COUNT, MAX_SLOT_SIZE, MIN_RING_CAPACITY, PAGE_SIZE};

/// Exit code for a bad configuration (sysexits.h EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Debug, Parser)]
#[command(name = "shmpipe-sidecar", version, about = "shmpipe sidecar: shared-memory sessions for local agents")]
pub struct Config {
    /// Control socket path (Unix stream socket).
    #[arg(long, env = "SHMPIPE_SOCKET")]
    pub socket: PathBuf,

    /// Accepted for compatibility: segments are sealed memfds (SPEC §10), which need no
    /// directory. Names older versions left in it are swept at startup.
    #[arg(long, env = "SHMPIPE_SEGMENT_DIR")]
    pub segment_dir: Option<PathBuf>,

    /// Tokio worker threads (dispatchers run on their own threads, one per session).
    #[arg(long, env = "SHMPIPE_WORKER_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

    /// Tokio's blocking-pool cap (`max_blocking_threads`): file:// store operations, fsyncs and
    /// other blocking calls queue for these threads instead of each getting one (tokio's
    /// default is 512: 3000 concurrent puts once took the sidecar from 5 to 83 threads).
    #[arg(long, env = "SHMPIPE_BLOCKING_THREADS", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub blocking_threads: u16,

    /// Maximum concurrent client sessions.
    #[arg(long, env = "SHMPIPE_MAX_CLIENTS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_clients: u32,

    /// Maximum slots per client.
    #[arg(long, env = "SHMPIPE_MAX_SLOTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SLOT_COUNT)))]
    pub max_slots: u32,

    /// Maximum slot size in bytes (a multiple of 4096).
    #[arg(long, env = "SHMPIPE_MAX_SLOT_SIZE", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u32).range(PAGE_SIZE as i64..=i64::from(MAX_SLOT_SIZE)))]
    pub max_slot_size: u32,

    /// Maximum SQ/CQ capacity in entries (a power of two).
    #[arg(long, env = "SHMPIPE_MAX_RING", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_RING_CAPACITY)..=i64::from(MAX_RING_CAPACITY)))]
    pub max_ring: u32,

    /// Maximum asynchronous operations in flight per client; beyond it the SQ is not drained.
    #[arg(long, env = "SHMPIPE_MAX_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub max_in_flight: u32,

    /// Longest busy-poll of an idle SQ before sleeping on its doorbell, in microseconds.
    #[arg(long, env = "SHMPIPE_SPIN_US", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub spin_us: u64,

    /// Log line format.
    #[arg(long, env = "SHMPIPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// `tracing` filter directive, e.g. `info` or `shmpipe_sidecar=debug`.
    #[arg(long = "log", env = "SHMPIPE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Extra uids allowed to connect (comma-separated); the sidecar's own uid always is.
    #[arg(long, env = "SHMPIPE_ALLOW_UIDS", value_parser = parse_uid_list, default_value = "")]
    pub allow_uids: UidList,

    /// Seconds in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHMPIPE_SHUTDOWN_GRACE", value_parser = parse_seconds, default_value = "20")]
    pub shutdown_grace: Duration,

    /// Also serve the UDS baseline transport (for performance comparison) on this path.
    #[arg(long, env = "SHMPIPE_BASELINE_SOCKET")]
    pub baseline_socket: Option<PathBuf>,

    /// Also touch (and so allocate) every slot page of a new segment before publishing it:
    /// the whole segment is then charged to the sidecar's memory cgroup up front (Kubernetes).
    /// Off by default: the header and rings are always faulted in, slots when first used.
    #[arg(long, env = "SHMPIPE_PREFAULT", default_value = "false", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::Set)]
    pub prefault: bool,

    /// Seconds a client may take for each handshake step (`hello`, then `mapped`).
    #[arg(long, env = "SHMPIPE_HANDSHAKE_TIMEOUT", value_parser = parse_seconds, default_value = "10")]
    pub handshake_timeout: Duration,

    /// Admin HTTP listener (/live, /ready, /metrics): IP:PORT, or `off`. Loopback by default;
    /// in Kubernetes use 0.0.0.0:9464 so the kubelet and Prometheus reach it on the pod IP.
    #[arg(long, env = "SHMPIPE_ADMIN_ADDR", value_parser = parse_admin_addr, default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: AdminAddr,

    /// Whether `admin_addr` was given (flag or environment) rather than defaulted. A taken
    /// port is then a startup error; for the default, the sidecar warns and runs without the
    /// admin listener, so several sidecars can run on one host with default settings.
    #[arg(skip)]
    pub admin_addr_explicit: bool,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// The object store (SPEC §7.2) and how sessions use it.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Object store URL: file:///dir, s3://bucket[/prefix] or memory:// [default:
    /// file://$XDG_DATA_HOME/shmpipe/store, else file://$HOME/.local/share/shmpipe/store].
    #[arg(long = "store", env = "SHMPIPE_STORE")]
    pub url: Option<String>,

    /// S3 endpoint URL (S3-compatible servers) [default: AWS_ENDPOINT_URL(_S3), else AWS].
    #[arg(long, env = "SHMPIPE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, env = "SHMPIPE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Allow a plain http:// S3 endpoint [default: AWS_ALLOW_HTTP, else false].
    #[arg(long, env = "SHMPIPE_S3_ALLOW_HTTP", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub s3_allow_http: Option<bool>,

    /// Path-style S3 addressing (endpoint/bucket/key) [default: true unless
    /// AWS_VIRTUAL_HOSTED_STYLE_REQUEST].
    #[arg(long, env = "SHMPIPE_S3_PATH_STYLE", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub s3_path_style: Option<bool>,

    /// Send UNSIGNED-PAYLOAD instead of hashing every byte into the SigV4 signature (https
    /// endpoints) [default: AWS_UNSIGNED_PAYLOAD, else false].
    #[arg(long, env = "SHMPIPE_S3_UNSIGNED_PAYLOAD", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub s3_unsigned_payload: Option<bool>,

    /// Retries of a failed store request (connection errors, timeouts, 5xx, 429).
    #[arg(long = "store-retries", env = "SHMPIPE_STORE_RETRIES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,

    /// First retry backoff in milliseconds (doubling, with jitter, up to 15 s).
    #[arg(long = "store-retry-backoff-ms", env = "SHMPIPE_STORE_RETRY_BACKOFF_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub retry_backoff_ms: u64,

    /// No retry starts later than this many seconds after a request's first attempt.
    #[arg(long = "store-retry-timeout-s", env = "SHMPIPE_STORE_RETRY_TIMEOUT_S", value_parser = parse_seconds, default_value = "180")]
    pub retry_timeout: Duration,

    /// Whole-request timeout of one S3 request (connect to end of body): a stalled request
    /// fails after this long and is retried (a long GET stream is resumed). Must be > 0.
    #[arg(long = "store-request-timeout-s", env = "SHMPIPE_STORE_REQUEST_TIMEOUT_S", value_parser = parse_seconds, default_value = "300")]
    pub request_timeout: Duration,

    /// Multipart part size in bytes (S3: at least 5 MiB).
    #[arg(long, env = "SHMPIPE_PART_SIZE", default_value_t = 8 << 20,
          value_parser = clap::value_parser!(u64).range(1..=5 << 30))]
    pub part_size: u64,

    /// Parts of one upload in flight at once.
    #[arg(long, env = "SHMPIPE_PARTS_IN_FLIGHT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parts_in_flight: u32,

    /// file:// stores: fsync objects and directories before PUT/COMMIT completes.
    #[arg(long = "store-fsync", env = "SHMPIPE_STORE_FSYNC", default_value = "true", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::Set)]
    pub fsync: bool,

    /// Upload limit of the whole sidecar in KiB/s (restic's --limit-upload) [default: none].
    #[arg(long, env = "SHMPIPE_LIMIT_UPLOAD", value_parser = clap::value_parser!(u64).range(1..=(1 << 40)))]
    pub limit_upload: Option<u64>,

    /// Download limit of the whole sidecar in KiB/s (restic's --limit-download) [default: none].
    #[arg(long, env = "SHMPIPE_LIMIT_DOWNLOAD", value_parser = clap::value_parser!(u64).range(1..=(1 << 40)))]
    pub limit_download: Option<u64>,

    /// Slots per session kept out of the GQ for read streams [default: min(slots/4, 16)].
    #[arg(long, env = "SHMPIPE_READ_RESERVE", value_parser = clap::value_parser!(u32).range(0..=65_535))]
    pub read_reserve: Option<u32>,

    /// Packs (~16 MiB each, held in memory while they upload) a backup uploads at once
    /// [default: 4 for s3:// (one PUT at a time cannot keep up with the pipeline over a
    /// network), 2 otherwise (a file:// upload waits for its fsync: measured 5 % faster than 1)].
    #[arg(long, env = "SHMPIPE_PACK_UPLOADS", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub pack_uploads: Option<u32>,

    /// Slots a read stream may hold at once when the agent does not say.
    #[arg(long, env = "SHMPIPE_READ_AHEAD", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_ahead: u32,
}

impl StoreArgs {
    /// The store URL: the configured one, else the XDG data directory's `shmpipe/store`.
    pub fn url(&self) -> Result<String, String> {
        if let Some(u) = &self.url {
            return Ok(u.clone());
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from).filter(|p| p.is_absolute()).map(|h| h.join(".local/share")))
            .ok_or("no store configured: set SHMPIPE_STORE (or HOME, for the default file://$HOME/.local/share/shmpipe/store)")?;
        let dir = data.join("shmpipe").join("store");
        url::Url::from_file_path(&dir).map(String::from).map_err(|()| format!("store directory {} is not a usable path", dir.display()))
    }

    /// Concurrent pack uploads of a backup (see `pack_uploads`).
    pub fn pack_uploads(&self) -> usize {
        let remote = self.url().is_ok_and(|u| u.starts_with("s3://"));
        self.pack_uploads.unwrap_or(if remote { 4 } else { 2 }) as usize
    }

    /// The store layer's configuration (URL parsed, options checked; nothing opened).
    pub fn store_config(&self) -> Result<shmpipe_store::StoreConfig, String> {
        let url = self.url()?;
        let mut options = shmpipe_store::StoreOptions {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.s3_allow_http,
            path_style: self.s3_path_style,
            unsigned_payload: self.s3_unsigned_payload,
            part_size: usize::try_from(self.part_size).map_err(|_| "SHMPIPE_PART_SIZE too large".to_owned())?,
            max_parts_in_flight: self.parts_in_flight as usize,
            fsync: self.fsync,
            limit_upload: self.limit_upload.map(|k| k * 1024),
            limit_download: self.limit_download.map(|k| k * 1024),
            ..Default::default()
        };
        options.retry.max_retries = self.retries as usize;
        options.retry.init_backoff = Duration::from_millis(self.retry_backoff_ms);
        options.retry.retry_timeout = self.retry_timeout;
        options.retry.request_timeout = self.request_timeout;
        shmpipe_store::StoreConfig::new(&url, options).map_err(|e| format!("SHMPIPE_STORE {url}: {e}"))
    }

    /// Slots a session of `slot_count` slots keeps out of the GQ (always < `slot_count`).
    pub fn read_reserve_for(&self, slot_count: u32) -> u32 {
        self.read_reserve.unwrap_or((slot_count / 4).min(16)).min(slot_count.saturating_sub(1))
    }
}


/// Default `SHMPIPE_ADMIN_ADDR`.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";

/// `SHMPIPE_ADMIN_ADDR`: where the admin listener binds, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminAddr(pub Option<SocketAddr>);

fn parse_admin_addr(s: &str) -> Result<AdminAddr, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr(None));
    }
    // No host names: resolving one at startup could pick an address nobody expects.
    s.parse::<SocketAddr>()
        .map(|a| AdminAddr(Some(a)))
        .map_err(|_| format!("`{s}` is not IP:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464) or `off`"))
}

/// The `SHMPIPE_ALLOW_UIDS` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UidList(pub Vec<u32>);

fn parse_uid_list(s: &str) -> Result<UidList, String> {
    let mut uids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        uids.push(part.parse::<u32>().map_err(|_| format!("`{part}` is not a uid (want a comma-separated list of numbers)"))?);
    }
    Ok(UidList(uids))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is not in 0..=86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// Parses flags and environment, then checks what clap cannot. The error is one line.
    pub fn load() -> Result<Self, String> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let parsed = Self::command().try_get_matches_from(args).and_then(|m| {
            let mut c = Self::from_arg_matches(&m)?;
            c.admin_addr_explicit = m.value_source("admin_addr") != Some(ValueSource::DefaultValue);
            Ok(c)
        });
        let config = match parsed {
            Ok(c) => c,
            Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => e.exit(),
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
                // clap names the flag; say that the SHMPIPE_* variable is the same setting.
                return Err(format!("{first} (each flag has a SHMPIPE_* variable; see --help)"));
            }
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.socket.as_os_str().is_empty() {
            return Err("SHMPIPE_SOCKET / --socket must not be empty".into());
        }
        if self.max_slot_size % PAGE_SIZE as u32 != 0 {
            return Err(format!("SHMPIPE_MAX_SLOT_SIZE {} is not a multiple of {PAGE_SIZE}", self.max_slot_size));
        }
        if !self.max_ring.is_power_of_two() {
            return Err(format!("SHMPIPE_MAX_RING {} is not a power of two", self.max_ring));
        }
        for (name, path) in [("SHMPIPE_SOCKET", Some(&self.socket)), ("SHMPIPE_BASELINE_SOCKET", self.baseline_socket.as_ref())] {
            let Some(path) = path else { continue };
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            if !parent.is_dir() {
                return Err(format!("{name} {}: directory {} does not exist", path.display(), parent.display()));
            }
        }
        if let Some(dir) = &self.segment_dir {
            if !dir.is_dir() {
                return Err(format!("SHMPIPE_SEGMENT_DIR {} is not a directory", dir.display()));
            }
        }
        if self.baseline_socket.as_ref() == Some(&self.socket) {
            return Err("SHMPIPE_BASELINE_SOCKET must differ from SHMPIPE_SOCKET".into());
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map_err(|e| format!("SHMPIPE_LOG `{}` is not a valid filter: {e}", self.log_filter))?;
        self.store.store_config()?;
        Ok(())
    }

    pub fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, String> {
        Config::load_from(std::iter::once("shmpipe-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(&["--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(c.worker_threads, 2);
        assert_eq!(c.blocking_threads, 8);
        assert_eq!(c.max_clients, 16);
        assert_eq!(c.max_slots, 1024);
        assert_eq!(c.max_slot_size, 16 << 20);
        assert_eq!(c.max_ring, 4096);
        assert_eq!(c.max_in_flight, 4096);
        assert_eq!(c.spin_us, 50);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert!(!c.prefault);
        assert!(load(&["--socket", "/s", "--prefault", "yes"]).unwrap().prefault);
        assert_eq!(c.allow_uids, UidList::default());
        assert!(c.segment_dir.is_none() && c.baseline_socket.is_none());
        assert_eq!(c.admin_addr, AdminAddr(Some("127.0.0.1:9464".parse().unwrap())));
        assert!(!c.admin_addr_explicit);
        assert!(load(&["--socket", "/s", "--admin-addr", "127.0.0.1:9464"]).unwrap().admin_addr_explicit);
    }

    #[test]
    fn admin_addr_forms() {
        let addr = |v: &str| load(&["--socket", "/s", "--admin-addr", v]).map(|c| c.admin_addr);
        assert_eq!(addr("off"), Ok(AdminAddr(None)));
        assert_eq!(addr("OFF"), Ok(AdminAddr(None)));
        assert_eq!(addr("0.0.0.0:9464"), Ok(AdminAddr(Some("0.0.0.0:9464".parse().unwrap()))));
        assert_eq!(addr("[::1]:0"), Ok(AdminAddr(Some("[::1]:0".parse().unwrap()))));
        for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999", "", "of"] {
            let e = addr(bad).unwrap_err();
            assert!(e.contains("admin-addr") && !e.contains('\n'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_values_give_one_line() {
        for args in [
            &["--socket", "/s", "--max-ring", "1000"][..],
            &["--socket", "/s", "--max-slot-size", "5000"],
            &["--socket", "/s", "--max-clients", "0"],
            &["--socket", "/s", "--blocking-threads", "0"],
            &["--socket", "/s", "--blocking-threads", "513"],
            &["--socket", "/s", "--allow-uids", "1,x"],
            &["--socket", "/s", "--shutdown-grace", "-1"],
            &["--socket", "/s", "--prefault", "maybe"],
            &["--socket", "/s", "--log", "=[{"],
            &["--socket", "/s", "--segment-dir", "/nonexistent/dir"],
            &["--socket", "/nonexistent/dir/s.sock"],
            &["--socket", "/s", "--baseline-socket", "/nonexistent/b.sock"],
            &["--socket", "/s", "--store", "gs://bucket"],
            &["--socket", "/s", "--store", "s3://b", "--part-size", "1048576"],
            &["--socket", "/s", "--store", "file:///tmp/x", "--s3-allow-http", "maybe"],
            &["--socket", "/s", "--parts-in-flight", "0"],
            &[],
        ] {
            let e = load(args).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{args:?}: {e:?}");
        }
    }

    #[test]
    fn store_settings_map_onto_the_store_options() {
        let c = load(&[
            "--socket", "/s", "--store", "s3://bkt/pre", "--s3-endpoint", "http://127.0.0.1:9000",
            "--s3-allow-http", "true", "--s3-path-style", "1", "--store-retries", "2",
            "--store-retry-backoff-ms", "10", "--store-retry-timeout-s", "3", "--part-size", "6291456",
            "--parts-in-flight", "2", "--read-reserve", "5", "--store-request-timeout-s", "1.5",
        ])
        .unwrap();
        let sc = c.store.store_config().unwrap();
        assert_eq!(sc.url.to_string(), "s3://bkt/pre");
        let o = &sc.options;
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((o.allow_http, o.path_style, o.unsigned_payload), (Some(true), Some(true), None));
        assert_eq!((o.retry.max_retries, o.retry.init_backoff), (2, Duration::from_millis(10)));
        assert_eq!(o.retry.retry_timeout, Duration::from_secs(3));
        assert_eq!(o.retry.request_timeout, Duration::from_millis(1500));
        assert_eq!((o.part_size, o.max_parts_in_flight), (6 << 20, 2));
        assert_eq!(c.store.read_reserve_for(64), 5);
        assert_eq!(c.store.read_reserve_for(3), 2, "always leaves the agent a slot");
        let d = load(&["--socket", "/s", "--store", "memory://"]).unwrap();
        assert_eq!((d.store.read_reserve_for(64), d.store.read_reserve_for(1000), d.store.read_reserve_for(1)), (16, 16, 0));
        assert_eq!(d.store.read_ahead, 4);
        assert_eq!((c.store.pack_uploads(), d.store.pack_uploads()), (4, 2), "remote stores upload more packs in parallel");
        let e = load(&["--socket", "/s", "--store", "s3://bkt", "--pack-uploads", "2"]).unwrap();
        assert_eq!(e.store.pack_uploads(), 2);
        assert!(load(&["--socket", "/s", "--pack-uploads", "0"]).is_err());
    }

    #[test]
    fn lists_and_booleans_parse() {
        let c = load(&["--socket", "/s", "--allow-uids", " 1000, 65534 ,", "--prefault", "0", "--shutdown-grace", "0.5"]).unwrap();
        assert_eq!(c.allow_uids, UidList(vec![1000, 65534]));
        assert!(!c.prefault);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
    }
}
