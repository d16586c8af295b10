//! Admin JSON bodies: the first byte picks the endpoint (push, broadcast, kick), the
//! rest is the body, decoded and checked exactly as the handler does before routing.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let path = match which % 3 {
        0 => "/v1/push",
        1 => "/v1/broadcast",
        _ => "/v1/kick",
    };
    let _ = im_gateway::admin::check_body(path, body);
});
