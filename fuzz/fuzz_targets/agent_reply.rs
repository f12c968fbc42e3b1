//! Agent replies the shim decodes and uses: the first byte picks the reply
//! type, the rest is its protobuf encoding as a hostile agent sends it.
//! Stats replies also go through the metrics conversion containerd gets.
#![no_main]

use hull_shim::config::MetricsFormat;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use protocols::{agent, health};

fn parse<M: Message>(data: &[u8]) -> Option<M> {
    M::parse_from_bytes(data).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Some(stats) = parse::<agent::StatsContainerResponse>(body) {
                let _ = hull_shim::metrics::to_any(&stats, MetricsFormat::V1);
                let _ = hull_shim::metrics::to_any(&stats, MetricsFormat::V2);
            }
        }
        1 => {
            let _ = parse::<agent::WaitProcessResponse>(body).map(|r| r.status as u32);
        }
        2 => {
            let _ = parse::<agent::OOMEvent>(body).map(|e| e.container_id.len());
        }
        3 => {
            let _ = parse::<health::HealthCheckResponse>(body);
        }
        4 => {
            let _ = parse::<agent::ReadStreamResponse>(body);
        }
        _ => {
            let _ = parse::<agent::GuestDetailsResponse>(body);
        }
    }
});
