//! Events for containerd: published in the order the shim made them, each
//! forward with a deadline, retried until containerd takes it (a containerd
//! restart included), from a queue bounded in memory. Publishing never
//! waits on containerd, so it can be done with any lock held.
//!
//! containerd-shim's own `RemotePublisher` forwards with no deadline, gives
//! up after five tries (about 15 s), and requeues a failed event behind
//! newer ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::protos::api::Envelope;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::EventsClient;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::Client;
use containerd_shim::protos::ttrpc::Code;
use tokio::sync::Notify;

/// Events held while containerd does not take them; beyond this the oldest
/// is dropped (and counted). An event is a few hundred bytes.
pub const MAX_QUEUED: usize = 1024;
/// One forward's deadline: a containerd that accepts but never answers
/// costs this, then the connection is dropped and the event sent again.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two tries: how late an event arrives after
/// containerd is back.
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// An event containerd answers with an error of its own (it is malformed,
/// not undelivered) is dropped after this many answers.
const MAX_REFUSALS: u32 = 3;

#[derive(Default)]
struct Queue {
    items: VecDeque<Envelope>,
    dropped: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the sender: an event was queued.
    queued: Notify,
    /// Wakes `flush`: the queue became empty.
    emptied: Notify,
    log: slog::Logger,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shim's events for containerd, delivered by a task of their own.
#[derive(Clone)]
pub struct Publisher(Arc<Shared>);

impl Publisher {
    /// Starts delivering to containerd's ttrpc `address` (connected when
    /// the first event is sent, and again after any failure).
    pub fn start(address: &str, log: slog::Logger) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            queued: Notify::new(),
            emptied: Notify::new(),
            log,
        });
        let address = address.trim_start_matches("unix://").to_string();
        tokio::spawn(deliver(shared.clone(), address));
        Publisher(shared)
    }

    /// Queues `event` under `topic`, stamped now; never waits.
    pub fn publish(&self, topic: &str, namespace: &str, event: Box<dyn MessageDyn>) {
        let envelope = match envelope(topic, namespace, event) {
            Ok(e) => e,
            Err(e) => {
                slog::error!(self.0.log, "event not encoded"; "topic" => topic, "error" => %e);
                return;
            }
        };
        let dropped = {
            let mut q = self.0.queue();
            q.items.push_back(envelope);
            let over = q.items.len().saturating_sub(MAX_QUEUED);
            q.items.drain(..over);
            q.dropped += over as u64;
            (over > 0).then_some(q.dropped)
        };
        if let Some(total) = dropped {
            if total.is_power_of_two() {
                slog::error!(self.0.log, "containerd takes no events; the oldest are dropped";
                    "queued" => MAX_QUEUED, "dropped" => total);
            }
        }
        self.0.queued.notify_one();
    }

    /// Waits until every queued event is delivered, or `within` passed;
    /// whether the queue is empty.
    pub async fn flush(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let emptied = self.0.emptied.notified();
                if self.0.queue().items.is_empty() {
                    return;
                }
                emptied.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Events waiting for containerd.
    pub fn queued(&self) -> usize {
        self.0.queue().items.len()
    }
}

fn envelope(
    topic: &str,
    namespace: &str,
    event: Box<dyn MessageDyn>,
) -> Result<Envelope, containerd_shim::Error> {
    let mut envelope = Envelope::new();
    envelope.set_topic(topic.to_owned());
    envelope.set_namespace(namespace.to_owned());
    envelope.set_timestamp(containerd_shim::util::timestamp()?);
    envelope.set_event(containerd_shim::util::convert_to_any(event)?);
    Ok(envelope)
}

/// How one forward ended.
enum Outcome {
    Taken,
    /// containerd answered with an error about the event itself.
    Refused(String),
    /// containerd was not there, or did not answer in time.
    Unreached(String),
}

async fn forward(client: &EventsClient, envelope: &Envelope) -> Outcome {
    let mut req = ForwardRequest::new();
    req.set_envelope(envelope.clone());
    let ctx = ttrpc::context::with_timeout(FORWARD_DEADLINE.as_nanos() as i64);
    match client.forward(ctx, &req).await {
        Ok(_) => Outcome::Taken,
        Err(ttrpc::Error::RpcStatus(s))
            if !matches!(s.code(), Code::DEADLINE_EXCEEDED | Code::UNAVAILABLE) =>
        {
            Outcome::Refused(format!("{:?}: {}", s.code(), s.message))
        }
        Err(e) => Outcome::Unreached(e.to_string()),
    }
}

async fn connect(address: &str) -> Result<EventsClient, String> {
    let stream = tokio::time::timeout(CONNECT_DEADLINE, tokio::net::UnixStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let stream = stream.into_std().map_err(|e| e.to_string())?;
    Ok(EventsClient::new(Client::new(
        std::os::fd::IntoRawFd::into_raw_fd(stream),
    )))
}

/// The sender: the oldest event first, until containerd takes it.
async fn deliver(shared: Arc<Shared>, address: String) {
    let mut client: Option<EventsClient> = None;
    let mut pause = RETRY_FIRST;
    let (mut failures, mut refusals) = (0u32, 0u32);
    loop {
        let next = shared.queue().items.front().cloned();
        let Some(envelope) = next else {
            shared.emptied.notify_waiters();
            shared.queued.notified().await;
            continue;
        };
        let outcome = match &client {
            Some(c) => forward(c, &envelope).await,
            None => match connect(&address).await {
                Ok(c) => forward(client.insert(c), &envelope).await,
                Err(e) => Outcome::Unreached(e),
            },
        };
        match outcome {
            Outcome::Taken => {
                if failures > 0 {
                    slog::info!(shared.log, "event delivered after containerd was unreachable";
                        "topic" => &envelope.topic, "failed_tries" => failures);
                }
                (failures, refusals, pause) = (0, 0, RETRY_FIRST);
                shared.queue().items.pop_front();
                continue;
            }
            Outcome::Refused(why) => {
                refusals += 1;
                if refusals >= MAX_REFUSALS {
                    slog::error!(shared.log, "containerd refused an event; dropped";
                        "topic" => &envelope.topic, "error" => why);
                    shared.queue().items.pop_front();
                    refusals = 0;
                    continue;
                }
            }
            Outcome::Unreached(why) => {
                client = None;
                failures += 1;
                if failures.is_power_of_two() {
                    slog::warn!(shared.log, "event not delivered yet; retrying";
                        "topic" => &envelope.topic, "tries" => failures, "error" => why,
                        "queued" => shared.queue().items.len());
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;
    use std::path::Path;
    use std::time::Instant;

    use containerd_shim::event::Event;
    use containerd_shim::protos::api::Empty;
    use containerd_shim::protos::events::task::TaskExit;
    use containerd_shim::protos::protobuf::Message;
    use containerd_shim::protos::shim_async::{create_events, Events};
    use containerd_shim::protos::ttrpc::r#async::{Server, TtrpcContext};
    use tokio::sync::mpsc;

    use super::*;

    /// containerd's side of Forward: the container ids of the TaskExit
    /// events it took, in order.
    struct Containerd(mpsc::UnboundedSender<String>);

    #[async_trait::async_trait]
    impl Events for Containerd {
        async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            let exit = TaskExit::parse_from_bytes(&req.envelope().event.value).unwrap();
            let _ = self.0.send(exit.container_id);
            Ok(Empty::new())
        }
    }

    async fn containerd_at(path: &Path) -> (Server, mpsc::UnboundedReceiver<String>) {
        let _ = std::fs::remove_file(path);
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let mut server = Server::new()
            .add_listener(listener.into_raw_fd())
            .unwrap()
            .set_domain_unix()
            .register_service(create_events(Arc::new(Containerd(tx))));
        server.start().await.unwrap();
        (server, rx)
    }

    fn exit(p: &Publisher, n: usize) {
        let event = TaskExit {
            container_id: format!("c{n}"),
            ..Default::default()
        };
        p.publish(&event.topic(), "default", Box::new(event));
    }

    async fn take(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            let id = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            got.push(id.expect("an event within 10 s").unwrap());
        }
        got
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("c{n}")).collect()
    }

    fn log() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_made_while_containerd_is_away_arrive_in_order_when_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock.ttrpc");
        let p = Publisher::start(path.to_str().unwrap(), log());
        (0..20).for_each(|n| exit(&p, n));
        // Well past the 15 s after which containerd-shim's publisher gives up.
        tokio::time::sleep(Duration::from_secs(16)).await;
        let (mut server, mut rx) = containerd_at(&path).await;
        assert_eq!(take(&mut rx, 20).await, ids(0..20));
        // containerd restarts: the connection breaks, and comes back.
        server.shutdown().await.unwrap();
        (20..25).for_each(|n| exit(&p, n));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_server, mut rx) = containerd_at(&path).await;
        assert_eq!(take(&mut rx, 5).await, ids(20..25));
        assert!(p.flush(Duration::from_secs(1)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_containerd_that_never_answers_costs_one_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock.ttrpc");
        let silent = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let p = Publisher::start(path.to_str().unwrap(), log());
        let start = Instant::now();
        exit(&p, 0);
        // Accepted and never answered; a working containerd takes over.
        let (held, _) = silent.accept().unwrap();
        let (_server, mut rx) = containerd_at(&path).await;
        assert_eq!(take(&mut rx, 1).await, ids(0..1));
        let took = start.elapsed();
        assert!(took >= FORWARD_DEADLINE, "delivered in {took:?}");
        assert!(took < FORWARD_DEADLINE + Duration::from_secs(3), "{took:?}");
        drop(held);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock.ttrpc");
        let p = Publisher::start(path.to_str().unwrap(), log());
        (0..MAX_QUEUED + 100).for_each(|n| exit(&p, n));
        assert_eq!(p.queued(), MAX_QUEUED);
        assert!(!p.flush(Duration::from_millis(200)).await);
        let (_server, mut rx) = containerd_at(&path).await;
        assert_eq!(take(&mut rx, MAX_QUEUED).await, ids(100..MAX_QUEUED + 100));
        assert!(p.flush(Duration::from_secs(1)).await);
    }
}
