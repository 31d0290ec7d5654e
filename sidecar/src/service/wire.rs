//! Control-socket messages (SPEC §10, contract "Handshake"): length-prefixed JSON frames
//! (u32 LE length ≤ 64 KiB, then UTF-8 JSON), the messages the sidecar reads (`hello`,
//! `mapped`) and writes (`welcome`, `error`, `draining`).

use serde::{Deserialize, Serialize};
use shm_protocol::layout::{Layout, VERSION};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAX_FRAME: usize = 65_536;

#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the socket (at a frame boundary or inside one).
    Eof,
    TooLarge(usize),
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("peer closed the socket"),
            Self::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Reads one frame's payload. Not cancel-safe: keep the future alive across `select!` loops.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let map_io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Eof
        } else {
            FrameError::Io(e)
        }
    };
    let len = r.read_u32_le().await.map_err(map_io)? as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(map_io)?;
    Ok(buf)
}

/// Length prefix plus JSON of `msg`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("control messages serialize");
    debug_assert!(json.len() <= MAX_FRAME);
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// What the client asked for in `hello`; absent fields take the client defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Hello {
    pub slot_count: Option<u64>,
    pub slot_size: Option<u64>,
    pub sq_capacity: Option<u64>,
    pub cq_capacity: Option<u64>,
    pub client: Option<String>,
}

/// Why a handshake frame was refused; maps to the error frame's `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloError {
    Version(String),
    Handshake(String),
}

/// Parses a `hello` frame. The version is checked before any other field, so a client of
/// another version gets SHMPIPE_E_VERSION even if its fields differ.
pub fn parse_hello(frame: &[u8]) -> Result<Hello, HelloError> {
    let value: serde_json::Value =
        serde_json::from_slice(frame).map_err(|e| HelloError::Handshake(format!("hello is not JSON: {e}")))?;
    if value.get("type").and_then(|t| t.as_str()) != Some("hello") {
        return Err(HelloError::Handshake("expected a {\"type\":\"hello\"} frame".into()));
    }
    match value.get("version") {
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => return Err(HelloError::Version(format!("protocol version {v} is not supported; this sidecar speaks {VERSION}"))),
        None => return Err(HelloError::Handshake("hello has no version".into())),
    }
    serde_json::from_value(value).map_err(|e| HelloError::Handshake(format!("bad hello field: {e}")))
}

/// Whether a frame is `{"type":"mapped"}`.
pub fn is_mapped(frame: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(frame).is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("mapped"))
}

#[derive(Debug, Serialize)]
pub struct WelcomeLayout {
    pub sq_offset: u64,
    pub sq_capacity: u32,
    pub cq_offset: u64,
    pub cq_capacity: u32,
    pub gq_offset: u64,
    pub gq_capacity: u32,
    pub slot_offset: u64,
    pub slot_count: u32,
    pub slot_size: u32,
}

impl From<&Layout> for WelcomeLayout {
    fn from(l: &Layout) -> Self {
        Self {
            sq_offset: l.sq_offset,
            sq_capacity: l.params.sq_capacity,
            cq_offset: l.cq_offset,
            cq_capacity: l.params.cq_capacity,
            gq_offset: l.gq_offset,
            gq_capacity: l.gq_capacity,
            slot_offset: l.slot_offset,
            slot_count: l.params.slot_count,
            slot_size: l.params.slot_size,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Limits {
    /// Async requests (and open store handles) per session.
    pub max_in_flight: u32,
    /// Slots kept out of the GQ for read streams (SPEC §9).
    pub read_reserve: u32,
    /// The store's multipart part size in bytes (SPEC §9: what a writer may pin).
    pub part_size: u64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg {
    Welcome {
        version: u32,
        session: u64,
        segment: String,
        segment_size: u64,
        /// A decimal string: a u64 does not fit a JS number.
        generation: String,
        layout: WelcomeLayout,
        limits: Limits,
    },
    Error {
        code: &'static str,
        message: String,
    },
    Draining,
}

/// Handshake refusal codes (local codes on the agent side, SPEC §8).
pub mod codes {
    pub const PERMISSION: &str = "SHMPIPE_E_PERMISSION";
    pub const VERSION: &str = "SHMPIPE_E_VERSION";
    pub const BUSY: &str = "SHMPIPE_E_BUSY";
    pub const HANDSHAKE: &str = "SHMPIPE_E_HANDSHAKE";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_parsing() {
        let h = parse_hello(br#"{"type":"hello","version":1,"slot_count":8,"client":"t","extra":true}"#).unwrap();
        assert_eq!(h.slot_count, Some(8));
        assert_eq!(h.client.as_deref(), Some("t"));
        assert_eq!(parse_hello(br#"{"type":"hello","version":1}"#).unwrap(), Hello::default());
        assert!(matches!(parse_hello(br#"{"type":"hello","version":2,"slot_count":"x"}"#), Err(HelloError::Version(_))));
        assert!(matches!(parse_hello(br#"{"type":"hello"}"#), Err(HelloError::Handshake(_))));
        assert!(matches!(parse_hello(br#"{"type":"hello","version":1,"slot_count":-1}"#), Err(HelloError::Handshake(_))));
        assert!(matches!(parse_hello(br#"{"type":"hello","version":1,"slot_size":1.5}"#), Err(HelloError::Handshake(_))));
        assert!(matches!(parse_hello(br#"{"type":"mapped"}"#), Err(HelloError::Handshake(_))));
        assert!(matches!(parse_hello(b"not json"), Err(HelloError::Handshake(_))));
        assert!(is_mapped(br#"{"type":"mapped"}"#));
        assert!(!is_mapped(br#"{"type":"hello"}"#));
    }

    #[test]
    fn server_messages_have_the_contract_shape() {
        let v: serde_json::Value = serde_json::from_slice(&encode_frame(&ServerMsg::Draining)[4..]).unwrap();
        assert_eq!(v, serde_json::json!({"type": "draining"}));
        let e = encode_frame(&ServerMsg::Error { code: codes::BUSY, message: "m".into() });
        assert_eq!(u32::from_le_bytes(e[..4].try_into().unwrap()) as usize, e.len() - 4);
        let v: serde_json::Value = serde_json::from_slice(&e[4..]).unwrap();
        assert_eq!(v, serde_json::json!({"type": "error", "code": "SHMPIPE_E_BUSY", "message": "m"}));
    }

    #[tokio::test]
    async fn frames_round_trip_and_refuse_oversize() {
        let frame = encode_frame(&ServerMsg::Draining);
        let mut r = &frame[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), br#"{"type":"draining"}"#);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Eof)));
        let big = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(read_frame(&mut &big[..]).await, Err(FrameError::TooLarge(_))));
    }
}
