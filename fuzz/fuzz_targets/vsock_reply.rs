//! What the guest side answers on a vsock connection before the stream:
//! the hybrid vsock `OK <port>` line and the agent's stream reply, read a
//! byte at a time with a length limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hull_fuzz::block_on(async {
        for max in [64, protocols::stream::MAX_HEADER_LEN] {
            let mut input = data;
            if let Ok(line) = hull_shim::vsock::read_line(&mut input, max).await {
                // Each byte becomes at most one char (U+FFFD when invalid).
                assert!(line.chars().count() <= max, "a line longer than its limit");
            }
        }
    });
});
