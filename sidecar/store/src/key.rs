//! Object keys: which strings name an object, identically on every backend.
//!
//! A key is `/`-separated segments, each non-empty, not `.` or `..`, without ASCII control
//! characters (object_store's `Path` rules), no leading or trailing `/`, at most 1024 bytes
//! (S3's limit), and whose last segment does not end in `#<digits>` (object_store's
//! file:// backend uses `name#N` for in-progress uploads and hides such files). Keys are
//! taken verbatim (no percent-encoding), so the key a LIST returns is the key that was PUT.
//! file:// cannot hold both `a` and `a/b` (a file is not a directory); S3 can.

use object_store::path::Path;

use crate::error::StoreError;

/// S3's key length limit.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks `key` and converts it to an object_store path.
pub fn parse_key(key: &str) -> Result<Path, StoreError> {
    let bad = |reason: &str| StoreError::InvalidKey { key: key.to_owned(), reason: reason.into() };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("longer than 1024 bytes"));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(bad("leading or trailing '/'"));
    }
    let path = Path::parse(key).map_err(|e| bad(&e.to_string()))?;
    let last = key.rsplit('/').next().unwrap_or(key);
    if let Some((_, digits)) = last.rsplit_once('#') {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("last segment ends in '#<digits>' (reserved for uploads in progress)"));
        }
    }
    Ok(path)
}

/// Checks a LIST prefix: empty (everything) or a key-like path; one trailing `/` is allowed.
/// Prefixes match whole segments: `a/b` lists `a/b/c`, not `a/bc`.
pub fn parse_prefix(prefix: &str) -> Result<Option<Path>, StoreError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with('/') {
        return Err(StoreError::InvalidKey { key: prefix.into(), reason: "leading '/'".into() });
    }
    Path::parse(trimmed)
        .map(Some)
        .map_err(|e| StoreError::InvalidKey { key: prefix.into(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys_verbatim() {
        for k in ["a", "a/b/c", "snap 2024/ü%20x", "a#b", "x#", "v1.2/..x"] {
            assert_eq!(parse_key(k).unwrap().as_ref(), k);
        }
    }

    #[test]
    fn rejects_bad_keys() {
        let long = "k".repeat(1025);
        for k in ["", "/a", "a/", "a//b", "a/./b", "..", "a/\u{1}", "f#12", "d/f#0", long.as_str()] {
            let e = parse_key(k).expect_err(k);
            assert_eq!(e.code(), "SHMPIPE_E_MALFORMED");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("").unwrap(), None);
        assert_eq!(parse_prefix("/").unwrap(), None);
        assert_eq!(parse_prefix("a/b/").unwrap().unwrap().as_ref(), "a/b");
        assert!(parse_prefix("/a").is_err());
        assert!(parse_prefix("a//b").is_err());
    }
}
