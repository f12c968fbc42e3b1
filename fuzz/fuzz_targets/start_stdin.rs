//! `start`'s stdin: containerd 2.3's BootstrapParams or older versions'
//! runtime options, and the answer built for them.
#![no_main]

use hull_shim::launch::StartForm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let form = StartForm::of(data, "c1", "default");
    let _ = form.answer("unix:///run/containerd/s/x");
    let _ =
        hull_shim::options::config_path(protobuf::Message::parse_from_bytes(data).ok().as_ref());
});
