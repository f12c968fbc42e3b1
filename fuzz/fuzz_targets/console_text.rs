//! The serial console's end as the shim reads it for the boot time.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_shim::sandbox::agent_ready_uptime_ms(&String::from_utf8_lossy(data));
});
