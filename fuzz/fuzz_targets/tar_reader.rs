//! The tar reader on any bytes: every header form (ustar, GNU, v7), PAX and GNU long
//! records, old-GNU sparse maps, base-256 numbers. It must return entries or an error,
//! never panic, and never hand out more data than an entry declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::tar::Reader;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(data, "plain");
    for _ in 0..100_000 {
        match reader.next_entry() {
            Ok(Some(entry)) => {
                let mut left = entry.size;
                while left > 0 {
                    let Ok(chunk) = reader.data() else { return };
                    if chunk.is_empty() {
                        return;
                    }
                    let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    assert!(n > 0);
                    reader.consume(n);
                    left -= n as u64;
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
});
