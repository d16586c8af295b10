//! The WebSocket frame decoder, with an oracle: the bytes decoded in one piece and the
//! same bytes fed in the chunks a socket might deliver (the first input byte picks the
//! chunk size; the tail of a split frame carried over as `conn.rs` does) must give the
//! same messages and the same outcome.

#![no_main]

use im_gateway::ws::frame::{Decoder, FrameError, Message};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer reaches "too big" often.
const MAX: usize = 4096;

fn record(seen: &mut Vec<String>, closed: &mut bool, m: Message<'_>) -> Result<(), FrameError> {
    if let Message::Close(_) = m {
        *closed = true;
    }
    seen.push(format!("{m:?}"));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);

    let mut whole = wire.to_vec();
    let (mut seen_whole, mut closed) = (Vec::new(), false);
    let outcome_whole =
        Decoder::default().decode(&mut whole, MAX, |m| record(&mut seen_whole, &mut closed, m)).map(|used| {
            assert!(used <= wire.len());
            closed
        });

    let mut dec = Decoder::default();
    let (mut seen_split, mut closed) = (Vec::new(), false);
    let mut pending: Vec<u8> = Vec::new();
    let mut outcome_split = Ok(false);
    for piece in wire.chunks(chunk) {
        pending.extend_from_slice(piece);
        match dec.decode(&mut pending, MAX, |m| record(&mut seen_split, &mut closed, m)) {
            Ok(used) => {
                pending.drain(..used);
                outcome_split = Ok(closed);
                if closed {
                    break; // the connection ignores what follows a close
                }
            }
            Err(e) => {
                outcome_split = Err(e);
                break;
            }
        }
    }
    assert_eq!(seen_whole, seen_split);
    assert_eq!(outcome_whole, outcome_split);
});
