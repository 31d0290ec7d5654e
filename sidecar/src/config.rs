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

    /// Create segments as files in this directory instead of POSIX shm (/dev/shm).
    #[arg(long, env = "SHMPIPE_SEGMENT_DIR")]
    pub segment_dir: Option<PathBuf>,

    /// Tokio worker threads (dispatchers run on their own threads, one per session).
    #[arg(long, env = "SHMPIPE_WORKER_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

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

    /// Touch every page of a new segment before publishing it.
    #[arg(long, env = "SHMPIPE_PREFAULT", default_value = "true", value_parser = BoolishValueParser::new(),
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
        assert_eq!(c.max_clients, 16);
        assert_eq!(c.max_slots, 1024);
        assert_eq!(c.max_slot_size, 16 << 20);
        assert_eq!(c.max_ring, 4096);
        assert_eq!(c.max_in_flight, 4096);
        assert_eq!(c.spin_us, 50);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert!(c.prefault);
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
            &["--socket", "/s", "--allow-uids", "1,x"],
            &["--socket", "/s", "--shutdown-grace", "-1"],
            &["--socket", "/s", "--prefault", "maybe"],
            &["--socket", "/s", "--log", "=[{"],
            &["--socket", "/s", "--segment-dir", "/nonexistent/dir"],
            &["--socket", "/nonexistent/dir/s.sock"],
            &["--socket", "/s", "--baseline-socket", "/nonexistent/b.sock"],
            &[],
        ] {
            let e = load(args).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{args:?}: {e:?}");
        }
    }

    #[test]
    fn lists_and_booleans_parse() {
        let c = load(&["--socket", "/s", "--allow-uids", " 1000, 65534 ,", "--prefault", "0", "--shutdown-grace", "0.5"]).unwrap();
        assert_eq!(c.allow_uids, UidList(vec![1000, 65534]));
        assert!(!c.prefault);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
    }
}
