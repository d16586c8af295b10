//! The HTTP upgrade parser. Input: two bytes of size limit, then the request bytes.
//! Beyond "no panic": a complete request says how many bytes it used (no more than it
//! got), parses the same from exactly those bytes, and its key makes a 101 answer;
//! every refusal makes an error answer.

#![no_main]

use im_gateway::ws::handshake::{accept_response, error_response, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 256 + usize::from(u16::from_le_bytes([data[0], data[1]]) % 8192);
    let buf = &data[2..];
    match parse(buf, max) {
        Ok(Some((upgrade, used))) => {
            assert!(used <= buf.len() && used <= max);
            assert_eq!(parse(&buf[..used], max), Ok(Some((upgrade.clone(), used))));
            assert!(!upgrade.key.is_empty() && upgrade.key.len() <= 64);
            let answer = accept_response(&upgrade.key);
            assert!(answer.starts_with(b"HTTP/1.1 101 "));
        }
        Ok(None) => assert!(buf.len() < max),
        Err(reject) => {
            let answer = error_response(reject.status, reject.reason, Some(1));
            assert!(answer.starts_with(b"HTTP/1.1 4"));
        }
    }
});
