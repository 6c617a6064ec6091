//! PAX extended header records (`"%d %s=%s\n"`), walked by their length prefix.
//!
//! Values are binary: `SCHILY.xattr.security.capability` holds raw bytes that may contain
//! `\n` and `=`, so a record ends where its length says, never at a newline.

/// One `key=value` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key (UTF-8 per POSIX).
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
}

/// Splits a PAX header's data into records, failing closed on any malformed one.
pub fn parse_records(data: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // Some writers pad the header data with NULs after the last record.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest.iter().take(20).position(|&b| b == b' ').ok_or("PAX record without a length prefix")?;
        let len_text = &rest[..space];
        if len_text.is_empty() || !len_text.iter().all(u8::is_ascii_digit) || (len_text[0] == b'0') {
            return Err(format!("PAX record length {:?} is not a decimal number", String::from_utf8_lossy(len_text)));
        }
        let len: usize =
            std::str::from_utf8(len_text).ok().and_then(|t| t.parse().ok()).ok_or("PAX record length overflows")?;
        if len <= space + 1 || len > rest.len() {
            return Err(format!("PAX record length {len} does not fit the header ({} bytes left)", rest.len()));
        }
        let record = &rest[space + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err("PAX record does not end with a newline at its stated length".into());
        };
        let eq = body.iter().position(|&b| b == b'=').ok_or("PAX record without '='")?;
        let key = std::str::from_utf8(&body[..eq]).map_err(|_| "PAX record key is not UTF-8")?;
        if key.is_empty() {
            return Err("PAX record with an empty key".into());
        }
        // POSIX keywords are NUL-free; readers that stop at the NUL would see another key.
        if key.contains('\0') {
            return Err(format!("PAX record key {key:?} contains a NUL byte"));
        }
        if records.iter().any(|r: &Record| r.key == key) {
            return Err(format!("PAX key {key:?} appears twice in one header"));
        }
        records.push(Record { key: key.to_owned(), value: body[eq + 1..].to_vec() });
        rest = &rest[len..];
    }
    Ok(records)
}

/// Formats one record (used by the writer).
pub fn format_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ' '=' '\n'
    // The length counts its own digits; grow until it is self-consistent.
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Parses a PAX time value `[-]seconds[.fraction]` into seconds and nanoseconds.
pub fn parse_time(value: &[u8]) -> Result<(i64, u32), String> {
    let text = std::str::from_utf8(value).map_err(|_| "PAX time is not ASCII")?;
    let bad = || format!("PAX time {text:?} is not [-]seconds[.fraction]");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    // Nanosecond precision; further digits are dropped (truncation, as GNU tar does).
    let nanos = frac.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    if !negative {
        return Ok((secs, nanos));
    }
    // -1.25 is 1.25 seconds before the epoch: seconds -2, nanos 0.75e9.
    if nanos == 0 { Ok((-secs, 0)) } else { Ok((-secs - 1, 1_000_000_000 - nanos)) }
}

/// Parses a PAX decimal number (uid, gid, size).
pub fn parse_decimal(key: &str, value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("PAX {key} {:?} is not a decimal number", String::from_utf8_lossy(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_walk_by_length_with_binary_values() {
        let cap = b"\x01\x00\x00\x02\n=\n\x00";
        let data = [format_record("path", b"a/b"), format_record("SCHILY.xattr.security.capability", cap)].concat();
        let recs = parse_records(&data).expect("valid records");
        assert_eq!(recs[0], Record { key: "path".into(), value: b"a/b".to_vec() });
        assert_eq!(recs[1].value, cap.to_vec());
    }

    #[test]
    fn malformed_records_fail_closed() {
        for bad in [
            &b"11 path=a/b"[..],     // no newline at stated length
            b"99 path=a\n",          // length past the end
            b"x path=a\n",           // not a number
            b"010 path=a\n",         // leading zero
            b"9 patha\n\n",          // no '='
            b"6 =ab\n",              // empty key
            b"8 path=a\n8 path=b\n", // duplicate key
            b"3 \n",                 // too short
        ] {
            assert!(parse_records(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn format_is_self_consistent() {
        for n in [0, 1, 5, 6, 7, 90, 95, 96, 97, 990, 995, 1000] {
            let value = vec![b'x'; n];
            let rec = format_record("k", &value);
            assert_eq!(parse_records(&rec).expect("round trip")[0].value, value, "n={n}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"1700000000.123456789"), Ok((1_700_000_000, 123_456_789)));
        assert_eq!(parse_time(b"5.1"), Ok((5, 100_000_000)));
        assert_eq!(parse_time(b"5.1234567891"), Ok((5, 123_456_789)));
        assert_eq!(parse_time(b"-1.25"), Ok((-2, 750_000_000)));
        assert_eq!(parse_time(b"-3"), Ok((-3, 0)));
        assert!(parse_time(b"1e9").is_err());
        assert!(parse_time(b"").is_err());
        assert!(parse_time(b".5").is_err());
    }
}
