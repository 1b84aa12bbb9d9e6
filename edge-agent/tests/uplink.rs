//! The uplink against a scripted collector on a real socket, with a real
//! spool in a temp dir: in-order acknowledgement under concurrent requests,
//! retries, dead letters, splitting, Retry-After, linger and shutdown.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use broker::{Disposition, Incoming, IngestSink};
use edge_agent::config::{Compression, UplinkConfig};
use edge_agent::metrics::{SpoolMetrics, StatusLabel, UplinkMetrics};
use edge_agent::spool::{Spool, SpoolOptions};
use edge_agent::uplink::{Uplink, UplinkState, DEFAULT_CONCURRENCY};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every test must be done well within this.
const DRAIN_LIMIT: Duration = Duration::from_secs(8);

/// How the test collector answers one request.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    /// Held this long before answering.
    delay: Duration,
    retry_after: Option<u64>,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }

    fn delayed(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }
}

/// One request the collector saw.
#[derive(Debug, Clone)]
struct Seen {
    seqs: Vec<u64>,
    status: u16,
    /// Since the collector started.
    arrived: Duration,
    answered: Duration,
    /// Requests in the collector when this one arrived, itself included.
    concurrent: usize,
}

#[derive(Default)]
struct Inner {
    /// Replies per first seq of a batch, used up in order; 200 when empty.
    script: Mutex<HashMap<u64, VecDeque<Reply>>>,
    /// Every other request gets this (200 by default).
    fallback: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    started: Mutex<Option<Instant>>,
}

/// A small collector that decodes `SyncBatch` bodies and answers by script.
struct TestCollector {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl TestCollector {
    async fn start(script: Vec<(u64, Vec<Reply>)>) -> TestCollector {
        let inner = Arc::new(Inner::default());
        *inner.started.lock().unwrap() = Some(Instant::now());
        *inner.script.lock().unwrap() = script
            .into_iter()
            .map(|(seq, replies)| (seq, replies.into()))
            .collect();
        let app = Router::new()
            .route("/v1/batches", post(batches))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestCollector { addr, inner }
    }

    fn set_fallback(&self, reply: Reply) {
        *self.inner.fallback.lock().unwrap() = Some(reply);
    }

    fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Time on the collector's clock (`Seen::arrived`).
    fn elapsed(&self) -> Duration {
        self.inner
            .started
            .lock()
            .unwrap()
            .expect("started")
            .elapsed()
    }

    fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn batches(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = inner.started.lock().unwrap().expect("started");
    let arrived = started.elapsed();
    let concurrent = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(concurrent, Ordering::SeqCst);
    let body = match headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        Some("zstd") => zstd::decode_all(body.as_ref()).expect("zstd body"),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .read_to_end(&mut out)
                .expect("gzip body");
            out
        }
        None => body.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    };
    let batch = telemetry::decode_batch(&body).expect("a SyncBatch");
    let seqs: Vec<u64> = batch.envelopes.iter().map(|e| e.seq).collect();
    let first = seqs.first().copied().expect("no empty batches");
    let scripted = inner
        .script
        .lock()
        .unwrap()
        .get_mut(&first)
        .and_then(VecDeque::pop_front);
    let reply = scripted
        .or(*inner.fallback.lock().unwrap())
        .unwrap_or(Reply::status(200));
    tokio::time::sleep(reply.delay).await;
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    inner.seen.lock().unwrap().push(Seen {
        seqs: seqs.clone(),
        status: reply.status,
        arrived,
        answered: started.elapsed(),
        concurrent,
    });
    let status = StatusCode::from_u16(reply.status).unwrap();
    let mut response = if status.is_success() {
        format!(r#"{{"accepted":{},"duplicates":0}}"#, seqs.len()).into_response()
    } else {
        r#"{"error":{"code":"scripted","message":"scripted"}}"#.into_response()
    };
    *response.status_mut() = status;
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes `count` readings received at `received_at` and waits until they
/// are durable; returns their seqs.
async fn fill(spool: &Spool, count: usize, received_at: u64) -> Vec<u64> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        let tickets: Vec<_> = (0..count)
            .map(|i| {
                spool
                    .submit(Incoming {
                        device_id: format!("d{}", i % 3),
                        topic: format!("devices/d{}/telemetry", i % 3),
                        received_at,
                        payload: vec![0x18, (i % 200) as u8].into(),
                        qos: 1,
                        disposition: Disposition::Reading,
                    })
                    .unwrap()
            })
            .collect();
        if let Some(last) = tickets.last() {
            spool.wait_durable(*last, Duration::from_secs(5)).unwrap();
        }
        tickets.into_iter().map(|t| t.0).collect()
    })
    .await
    .unwrap()
}

/// Batches of 10, short backoff, zstd bodies.
fn config(collector: SocketAddr) -> UplinkConfig {
    UplinkConfig {
        url: format!("http://{collector}"),
        token: "test-token".into(),
        ca_certs: Default::default(),
        client_identity: None,
        max_batch_records: 10,
        max_batch_bytes: 1 << 20,
        linger: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        compression: Compression::Zstd,
        concurrency: edge_agent::uplink::DEFAULT_CONCURRENCY,
    }
}

/// A spool, a collector and a running uplink.
struct Harness {
    spool: Spool,
    collector: TestCollector,
    metrics: UplinkMetrics,
    stop: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Spools `readings` (received a minute ago: linger never holds them,
    /// and the spool's age limit is far off),
    /// then starts the uplink against a collector following `script`.
    async fn start(
        readings: usize,
        script: Vec<(u64, Vec<Reply>)>,
        tweak: impl FnOnce(&mut UplinkConfig),
    ) -> (Harness, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let spool =
            Spool::open(dir.path(), SpoolOptions::default(), SpoolMetrics::default()).unwrap();
        let seqs = fill(&spool, readings, now_ms() - 60_000).await;
        let collector = TestCollector::start(script).await;
        let mut config = config(collector.addr);
        tweak(&mut config);
        let harness = Harness::run(dir, spool, collector, config);
        (harness, seqs)
    }

    fn run(
        dir: tempfile::TempDir,
        spool: Spool,
        collector: TestCollector,
        config: UplinkConfig,
    ) -> Harness {
        let metrics = UplinkMetrics::default();
        let stop = CancellationToken::new();
        let uplink = Uplink {
            gateway_id: "gw-test".into(),
            spool: spool.clone(),
            config,
            metrics: metrics.clone(),
            state: Arc::new(UplinkState::default()),
        };
        let task = tokio::spawn(uplink.run(stop.clone()));
        Harness {
            spool,
            collector,
            metrics,
            stop,
            task,
            _dir: dir,
        }
    }

    /// Waits until nothing is pending.
    async fn drained(&self) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while self.spool.stats().pending > 0 {
            assert!(
                Instant::now() < deadline,
                "not drained: {:?}, requests {:#?}",
                self.spool.stats(),
                self.collector.seen()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the uplink; it must return promptly.
    async fn stop(self) -> Spool {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("uplink stops on shutdown")
            .unwrap();
        self.spool
    }

    fn count(&self, status: &str) -> u64 {
        self.metrics
            .batches
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .get()
    }

    /// Every reading reached the collector: in a 2xx, or (only the `dead`
    /// ones, which must be in the dead letters) in a refused batch; and the
    /// spool is empty.
    fn assert_delivered(&self, seqs: &[u64], dead: &[u64]) {
        let seen = self.collector.seen();
        for seq in seqs {
            let stored = seen.iter().any(|s| s.status == 200 && s.seqs.contains(seq));
            let sent = seen.iter().any(|s| s.seqs.contains(seq));
            assert!(sent, "seq {seq} never reached the collector: {seen:#?}");
            assert_eq!(
                stored,
                !dead.contains(seq),
                "seq {seq} stored: {stored}: {seen:#?}"
            );
        }
        assert_eq!(self.spool.stats().pending, 0);
        assert_eq!(self.spool.stats().acked_seq, *seqs.last().unwrap());
        let letters: Vec<u64> = self
            .spool
            .dead_letters()
            .unwrap()
            .iter()
            .map(|l| l.envelope.seq)
            .collect();
        assert_eq!(letters, dead);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_stay_contiguous_when_a_later_batch_answers_first() {
    let first_delay = Duration::from_millis(800);
    let (h, seqs) = Harness::start(
        30,
        vec![(1, vec![Reply::status(200).delayed(first_delay)])],
        |_| {},
    )
    .await;
    assert_eq!(seqs[0], 1);
    // Watch the acknowledged seq the whole time.
    let spool = h.spool.clone();
    let watching = CancellationToken::new();
    let watcher = tokio::spawn({
        let watching = watching.clone();
        async move {
            let mut acked = Vec::new();
            while !watching.is_cancelled() {
                acked.push(spool.stats().acked_seq);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            acked
        }
    });
    // The second and third batches are answered while the first is held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.collector.seen().len() < 2 {
        assert!(Instant::now() < deadline, "batches 2 and 3 never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut early: Vec<u64> = h.collector.seen().iter().map(|s| s.seqs[0]).collect();
    early.sort();
    assert_eq!(early, vec![11, 21]);
    assert_eq!(h.spool.stats().acked_seq, 0, "nothing acked past a gap");
    assert_eq!(h.spool.stats().pending, 30);

    h.drained().await;
    watching.cancel();
    let acked = watcher.await.unwrap();
    assert!(
        acked.windows(2).all(|w| w[0] <= w[1]),
        "acked seq never goes back"
    );
    assert!(
        acked.iter().all(|&a| a == 0 || a == 30),
        "acked past the held first batch: {acked:?}"
    );
    let seen = h.collector.seen();
    assert_eq!(seen.len(), 3, "each batch sent once: {seen:#?}");
    assert_eq!(seen[2].seqs[0], 1, "the first batch was answered last");
    assert_eq!(h.metrics.records.get(), 30);
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_sends_the_same_batch_again() {
    let (h, seqs) = Harness::start(
        10,
        vec![(1, vec![Reply::status(500), Reply::status(200)])],
        |_| {},
    )
    .await;
    h.drained().await;
    let seen = h.collector.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!((seen[0].status, seen[1].status), (500, 200));
    assert_eq!(seen[0].seqs, seqs);
    assert_eq!(seen[1].seqs, seqs, "the same batch again");
    assert_eq!(h.metrics.retries.get(), 1);
    assert_eq!((h.count("500"), h.count("200")), (1, 1));
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_dead_letters_exactly_that_batch_and_moves_on() {
    let (h, seqs) = Harness::start(30, vec![(11, vec![Reply::status(400)])], |_| {}).await;
    h.drained().await;
    let seen = h.collector.seen();
    assert_eq!(seen.len(), 3, "no batch is retried: {seen:#?}");
    h.assert_delivered(&seqs, &seqs[10..20]);
    assert_eq!(
        h.metrics.records.get(),
        20,
        "dead letters are not counted as stored"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_and_both_halves_get_through() {
    let (h, seqs) = Harness::start(20, vec![(1, vec![Reply::status(413)])], |_| {}).await;
    h.drained().await;
    let seen = h.collector.seen();
    let answered = |range: &[u64]| seen.iter().any(|s| s.status == 200 && s.seqs == range);
    assert!(answered(&seqs[0..5]), "first half: {seen:#?}");
    assert!(answered(&seqs[5..10]), "second half: {seen:#?}");
    assert!(
        seen.iter().all(|s| s.seqs.len() <= 10),
        "no batch above the limit"
    );
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_for_a_single_reading_dead_letters_it() {
    let (h, seqs) = Harness::start(3, vec![(1, vec![Reply::status(413); 4])], |c| {
        c.max_batch_records = 1
    })
    .await;
    h.drained().await;
    h.assert_delivered(&seqs, &seqs[..1]);
    let letters = h.spool.dead_letters().unwrap();
    assert!(letters[0].reason.contains("too large"), "{letters:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_waits_that_long() {
    let busy = Reply {
        retry_after: Some(1),
        ..Reply::status(429)
    };
    // Without Retry-After the backoff would retry within 100 ms.
    let (h, seqs) = Harness::start(10, vec![(1, vec![busy])], |_| {}).await;
    h.drained().await;
    let seen = h.collector.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let waited = seen[1].arrived - seen[0].answered;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "retried after {waited:?}");
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_retries_at_the_slowest_pace() {
    let (h, seqs) = Harness::start(10, vec![(1, vec![Reply::status(401)])], |c| {
        c.backoff_max = Duration::from_millis(400)
    })
    .await;
    h.drained().await;
    let seen = h.collector.seen();
    let waited = seen[1].arrived - seen[0].answered;
    assert!(
        waited >= Duration::from_millis(380),
        "retried after {waited:?}"
    );
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_concurrency_limit_is_in_flight() {
    let batches = DEFAULT_CONCURRENCY * 2 + 1;
    let (h, seqs) = Harness::start(batches * 10, vec![], |_| {}).await;
    h.collector
        .set_fallback(Reply::status(200).delayed(Duration::from_millis(150)));
    h.drained().await;
    assert_eq!(h.collector.max_in_flight(), DEFAULT_CONCURRENCY);
    assert_eq!(h.collector.seen().len(), batches);
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failure_one_request_probes_until_one_succeeds() {
    // Every batch fails once, all at the same time.
    let script = (0..4u64)
        .map(|i| (1 + 10 * i, vec![Reply::status(503)]))
        .collect();
    let (h, seqs) = Harness::start(40, script, |_| {}).await;
    h.drained().await;
    let seen = h.collector.seen();
    assert_eq!(seen.len(), 8, "{seen:#?}");
    let mut retries: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    retries.sort_by_key(|s| s.arrived);
    assert_eq!(retries[0].seqs[0], 1, "the oldest batch probes first");
    assert_eq!(retries[0].concurrent, 1, "the probe goes alone: {seen:#?}");
    assert!(
        retries[1..]
            .iter()
            .all(|s| s.arrived >= retries[0].answered),
        "the rest wait for the probe: {seen:#?}"
    );
    h.assert_delivered(&seqs, &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readings_linger_and_only_full_batches_open_requests() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default(), SpoolMetrics::default()).unwrap();
    let collector = TestCollector::start(vec![]).await;
    let mut config = config(collector.addr);
    config.linger = Duration::from_millis(400);
    let h = Harness::run(dir, spool, collector, config);
    // 25 fresh readings: two full batches now, the last 5 after the linger.
    let written = h.collector.elapsed();
    let seqs = fill(&h.spool, 25, now_ms()).await;
    h.drained().await;
    let seen = h.collector.seen();
    let sizes: Vec<usize> = seen.iter().map(|s| s.seqs.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5], "{seen:#?}");
    assert!(
        seen[2].arrived >= written + Duration::from_millis(390),
        "the partial batch waits for the linger: {seen:#?}"
    );

    // A live trickle: one request per linger, not one per reading.
    let before = seen.len();
    for _ in 0..3 {
        fill(&h.spool, 1, now_ms()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.drained().await;
    let seen = h.collector.seen();
    assert_eq!(seen.len(), before + 1, "{seen:#?}");
    assert_eq!(seen.last().unwrap().seqs, vec![26, 27, 28]);
    h.assert_delivered(&[seqs, vec![26, 27, 28]].concat(), &[]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_uplink_while_requests_hang() {
    let (h, _) = Harness::start(
        20,
        vec![(1, vec![Reply::status(200).delayed(Duration::from_secs(30))])],
        |_| {},
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.collector.seen().is_empty() {
        assert!(Instant::now() < deadline, "second batch never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spool = h.stop().await;
    // The second batch was stored but waits for the first: nothing acked.
    assert_eq!(spool.stats().pending, 20);
    assert_eq!(spool.stats().acked_seq, 0);
}
