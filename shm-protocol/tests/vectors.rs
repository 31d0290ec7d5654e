//! Shared test vectors (SPEC.md §11). This test builds every vector from the crate's encoders
//! and compares it with the committed `vectors/vectors.json`, which the TS client checks too.
//! After an intended protocol change, regenerate with `SHMPIPE_BLESS=1 cargo test -p
//! shm-protocol --test vectors` and review the diff.

use serde_json::{json, Value};
use shm_protocol::entry::{cq_flags, sq_flags, Completion, Grant, Opcode, RawSubmission, RANGE_TO_END};
use shm_protocol::error::ErrorCode;
use shm_protocol::layout::{header, ring, Layout, Params, MAGIC, NO_SLOT};

fn dec(v: u64) -> Value {
    Value::String(v.to_string())
}

fn sub_fields(s: &RawSubmission) -> Value {
    json!({
        "request_id": dec(s.request_id), "opcode": s.opcode, "flags": s.flags,
        "reserved0": s.reserved0, "slot_id": s.slot_id, "slot_gen": s.slot_gen,
        "offset": s.offset, "length": s.length, "reserved1": s.reserved1,
        "args": s.args.iter().map(|a| dec(*a)).collect::<Vec<_>>(),
    })
}

fn submissions() -> Vec<(&'static str, RawSubmission)> {
    let nop = RawSubmission { request_id: 1, slot_id: NO_SLOT, ..Default::default() };
    let echo = RawSubmission {
        request_id: 0x0123_4567_89ab_cdef,
        opcode: Opcode::Echo as u8,
        slot_id: 7,
        slot_gen: 3,
        offset: 16,
        length: 4080,
        ..Default::default()
    };
    vec![
        ("nop", nop),
        ("echo", echo),
        ("echo_release", RawSubmission { flags: sq_flags::RELEASE_SLOT, ..echo }),
        ("slot_release", RawSubmission { request_id: u64::MAX, opcode: Opcode::SlotRelease as u8, slot_id: 0, slot_gen: u32::MAX, ..Default::default() }),
        ("stats", RawSubmission { request_id: 42, opcode: Opcode::Stats as u8, slot_id: 1, slot_gen: 1, length: 65536, ..Default::default() }),
        ("delay", RawSubmission { request_id: 43, opcode: Opcode::Delay as u8, args: [1500, 0, 0, 0], ..nop }),
        ("unknown_opcode", RawSubmission { opcode: 0x7f, ..nop }),
        ("reserved_nonzero", RawSubmission { reserved1: 1, ..echo }),
        ("unknown_flag", RawSubmission { flags: 0x40, ..echo }),
        ("echo_without_slot", RawSubmission { slot_id: NO_SLOT, ..echo }),
        ("nop_with_slot", RawSubmission { slot_id: 0, ..nop }),
        ("delay_too_long", RawSubmission { opcode: Opcode::Delay as u8, args: [60_000_001, 0, 0, 0], ..nop }),
        ("args_all_bits", RawSubmission { args: [u64::MAX, 1 << 63, 0x8000_0000, 1], ..nop }),
        // Object-store ops (SPEC §7.2). PUT: data [0, 1 MiB - 4096), key (12 bytes) at 1 MiB - 4096.
        ("put", RawSubmission { request_id: 100, opcode: Opcode::Put as u8, slot_id: 3, slot_gen: 2, offset: 0, length: (1 << 20) - 4096, args: [12, (1 << 20) - 4096, 0, 0], ..Default::default() }),
        ("open_write", RawSubmission { request_id: 101, opcode: Opcode::OpenWrite as u8, slot_id: 4, slot_gen: 1, offset: 0, length: 9, ..Default::default() }),
        ("write", RawSubmission { request_id: 102, opcode: Opcode::Write as u8, slot_id: 5, slot_gen: 7, offset: 0, length: 1 << 20, args: [1, 0, 0, 0], ..Default::default() }),
        ("commit", RawSubmission { request_id: 103, opcode: Opcode::Commit as u8, args: [1, 0, 0, 0], ..nop }),
        ("abort", RawSubmission { request_id: 104, opcode: Opcode::Abort as u8, args: [2, 0, 0, 0], ..nop }),
        ("open_read_whole", RawSubmission { request_id: 105, opcode: Opcode::OpenRead as u8, slot_id: 6, slot_gen: 1, offset: 0, length: 9, args: [0, RANGE_TO_END, 4, 0], ..Default::default() }),
        ("open_read_range", RawSubmission { request_id: 106, opcode: Opcode::OpenRead as u8, slot_id: 6, slot_gen: 2, offset: 0, length: 9, args: [4096, 8192, 0, 0], ..Default::default() }),
        ("stat", RawSubmission { request_id: 107, opcode: Opcode::Stat as u8, slot_id: 0, slot_gen: 1, offset: 0, length: 9, ..Default::default() }),
        ("list", RawSubmission { request_id: 108, opcode: Opcode::List as u8, slot_id: 1, slot_gen: 1, offset: 0, length: 40, ..Default::default() }),
        ("delete", RawSubmission { request_id: 109, opcode: Opcode::Delete as u8, slot_id: 2, slot_gen: 1, offset: 0, length: 9, ..Default::default() }),
        ("put_without_slot", RawSubmission { opcode: Opcode::Put as u8, args: [12, 0, 0, 0], ..nop }),
        ("commit_with_slot", RawSubmission { opcode: Opcode::Commit as u8, slot_id: 0, args: [1, 0, 0, 0], ..nop }),
    ]
}

fn completions() -> Vec<(&'static str, Completion)> {
    vec![
        ("ok", Completion::ok(1, 0)),
        ("echo_ok", Completion { aux: [0xe306_9283, 0, 0], ..Completion::ok(0x0123_4567_89ab_cdef, 4080).with_slot(7, 3) }),
        ("stream_more", Completion { flags: cq_flags::MORE | cq_flags::SLOT, slot_id: 2, slot_gen: 9, result: 1 << 20, ..Completion::ok(5, 0) }),
        ("invalid_slot", Completion::error(9, ErrorCode::InvalidSlot)),
        ("stale_slot", Completion::error(10, ErrorCode::StaleSlot)),
        ("internal", Completion { aux: [u64::MAX, 1, 2], ..Completion::error(u64::MAX, ErrorCode::Internal) }),
        ("put_ok", Completion { aux: [0xe306_9283, 0, 0], ..Completion::ok(100, 9) }),
        ("open_write_ok", Completion { ..Completion::ok(101, 1).with_slot(4, 1) }),
        ("commit_ok", Completion { aux: [0x1234_5678, 0, 0], ..Completion::ok(103, 3 << 30) }),
        ("read_chunk", Completion { flags: cq_flags::MORE | cq_flags::SLOT, slot_id: 6, slot_gen: 1, result: 1 << 20, aux: [2 << 20, 3, 0], ..Completion::ok(105, 0) }),
        ("read_end_verified", Completion { aux: [1, 3, 0], ..Completion::ok(105, (2 << 20) + 17) }),
        ("stat_ok", Completion { aux: [0xe306_9283, 1_732_000_000_000, 0], ..Completion::ok(107, 9).with_slot(0, 1) }),
        ("not_found_with_message", Completion { result: 31, ..Completion::error(107, ErrorCode::NotFound).with_slot(0, 1) }),
        ("invalid_handle", Completion::error(104, ErrorCode::InvalidHandle)),
    ]
}

fn build() -> Value {
    let params = Params::new(256, 512, 33, 65536).unwrap();
    let layout = Layout::new(params).unwrap();
    let generation = 0x5eed_0000_0000_0001_u64;
    let mut hdr = vec![0u8; header::STATIC_END];
    layout.encode_header(generation, &mut hdr);

    let header_offsets = json!({
        "magic": header::MAGIC, "version": header::VERSION, "header_size": header::HEADER_SIZE,
        "segment_size": header::SEGMENT_SIZE, "generation": header::GENERATION,
        "entry_size": header::ENTRY_SIZE, "grant_entry_size": header::GRANT_ENTRY_SIZE,
        "sq_offset": header::SQ_OFFSET, "sq_capacity": header::SQ_CAPACITY,
        "cq_capacity": header::CQ_CAPACITY, "cq_offset": header::CQ_OFFSET,
        "gq_offset": header::GQ_OFFSET, "gq_capacity": header::GQ_CAPACITY,
        "slot_count": header::SLOT_COUNT, "slot_offset": header::SLOT_OFFSET,
        "slot_size": header::SLOT_SIZE, "flags": header::FLAGS, "static_end": header::STATIC_END,
        "state": header::STATE, "sidecar_heartbeat": header::SIDECAR_HEARTBEAT,
        "sidecar_need_wakeup": header::SIDECAR_NEED_WAKEUP, "agent_need_wakeup": header::AGENT_NEED_WAKEUP,
    });
    let subs: Vec<Value> = submissions()
        .iter()
        .map(|(name, s)| {
            let error = s.validate().err().map(|e| e.code.name());
            json!({ "name": name, "fields": sub_fields(s), "hex": hex::encode(s.encode()), "error": error })
        })
        .collect();
    let comps: Vec<Value> = completions()
        .iter()
        .map(|(name, c)| {
            json!({ "name": name, "fields": {
                "request_id": dec(c.request_id), "status": c.status, "flags": c.flags,
                "slot_id": c.slot_id, "slot_gen": c.slot_gen, "result": dec(c.result),
                "aux": c.aux.iter().map(|a| dec(*a)).collect::<Vec<_>>() },
                "hex": hex::encode(c.encode()) })
        })
        .collect();
    let grants: Vec<Value> = [Grant { slot_id: 0, slot_gen: 1 }, Grant { slot_id: 65534, slot_gen: u32::MAX }]
        .iter()
        .map(|g| json!({ "fields": { "slot_id": g.slot_id, "slot_gen": g.slot_gen }, "hex": hex::encode(g.encode()) }))
        .collect();
    let bytes: Vec<u8> = (0..=255u8).collect();
    let crc = json!([
        { "ascii": "", "crc": crc32c::crc32c(b"") },
        { "ascii": "123456789", "crc": crc32c::crc32c(b"123456789") },
        { "ascii": "shmpipe", "crc": crc32c::crc32c(b"shmpipe") },
        { "hex": hex::encode(&bytes), "crc": crc32c::crc32c(&bytes) },
        { "hex": hex::encode([0u8; 32]), "crc": crc32c::crc32c(&[0u8; 32]) },
    ]);
    json!({
        "version": shm_protocol::layout::VERSION,
        "magic_hex": hex::encode(MAGIC.to_le_bytes()),
        "header_offsets": header_offsets,
        "ring_offsets": { "tail": ring::TAIL, "head": ring::HEAD, "entries": ring::ENTRIES },
        "opcodes": Opcode::ALL.iter().map(|o| (o.name().to_uppercase(), json!(*o as u8))).collect::<serde_json::Map<_, _>>(),
        "error_codes": ErrorCode::ALL.iter().map(|c| (c.name().to_string(), json!(c.status()))).collect::<serde_json::Map<_, _>>(),
        "header": {
            "params": { "sq_capacity": params.sq_capacity, "cq_capacity": params.cq_capacity, "slot_count": params.slot_count, "slot_size": params.slot_size },
            "generation": dec(generation),
            "layout": { "sq_offset": layout.sq_offset, "cq_offset": layout.cq_offset, "gq_offset": layout.gq_offset, "gq_capacity": layout.gq_capacity, "slot_offset": layout.slot_offset, "segment_size": layout.segment_size },
            "hex": hex::encode(&hdr),
        },
        "submissions": subs,
        "completions": comps,
        "grants": grants,
        "crc32c": crc,
    })
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/vectors.json");

#[test]
fn committed_vectors_match_the_encoders() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    if std::env::var_os("SHMPIPE_BLESS").is_some() {
        std::fs::write(PATH, &built).unwrap();
    }
    let committed = std::fs::read_to_string(PATH).expect("vectors/vectors.json is committed");
    assert_eq!(committed, built, "encoders disagree with the committed vectors (see the module doc)");
}

#[test]
fn committed_vectors_decode_to_their_fields() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let hdr = hex::decode(v["header"]["hex"].as_str().unwrap()).unwrap();
    let mut page = vec![0u8; 4096];
    page[..hdr.len()].copy_from_slice(&hdr);
    let (layout, generation) = Layout::decode_header(&page).unwrap();
    assert_eq!(generation.to_string(), v["header"]["generation"].as_str().unwrap());
    assert_eq!(layout.slot_offset, v["header"]["layout"]["slot_offset"].as_u64().unwrap());
    for s in v["submissions"].as_array().unwrap() {
        let bytes: [u8; 64] = hex::decode(s["hex"].as_str().unwrap()).unwrap().try_into().unwrap();
        let raw = RawSubmission::decode(&bytes);
        assert_eq!(sub_fields(&raw), s["fields"], "{}", s["name"]);
        assert_eq!(raw.validate().err().map(|e| e.code.name()), s["error"].as_str(), "{}", s["name"]);
    }
    for c in v["completions"].as_array().unwrap() {
        let bytes: [u8; 64] = hex::decode(c["hex"].as_str().unwrap()).unwrap().try_into().unwrap();
        let comp = Completion::decode(&bytes).unwrap();
        assert_eq!(comp.request_id.to_string(), c["fields"]["request_id"].as_str().unwrap());
        assert_eq!(i64::from(comp.status), c["fields"]["status"].as_i64().unwrap());
    }
    assert_eq!(v["crc32c"][1]["crc"].as_u64(), Some(0xe306_9283), "CRC-32C check value of \"123456789\"");
}
