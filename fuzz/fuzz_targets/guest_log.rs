//! The agent's log stream as the shim reads it: lines cut, rate-limited,
//! overlong ones skipped.
#![no_main]

use hull_shim::guest_log::{copy_lines, RateLimit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    hull_fuzz::block_on(copy_lines(data, &log, &mut RateLimit::new(200.0, 1000.0)));
});
