//! MQTT for the publish element: the broker address, TLS from PEM files, and a publisher
//! whose connection runs on its own thread so that the streaming thread never waits for the
//! network.
//!
//! Accounting: every record handed to [`Publisher::publish`] ends up counted exactly once,
//! as `sent` (QoS 0: written to the connection; QoS 1: acknowledged; QoS 2: completed) or as
//! dropped: refused at once (not connected, queue full) or lost (queued or in flight when the
//! connection broke, or still queued when the element stopped). Records are never replayed
//! after a reconnection (the session is clean), so a subscriber sees each at most once and in
//! order. A record in flight when the connection broke counts as lost although the broker may
//! have forwarded it: subscribers can get up to the in-flight window more than `sent`.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First and largest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// TCP + TLS + CONNACK, per attempt.
const CONNECT_TIMEOUT_S: u64 = 5;
/// Records are a few kB; room for many keypoints and long landmark names.
const MAX_PACKET: usize = 1 << 20;
/// How long a graceful disconnect may take when the element stops.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// Where and how to connect (the element's MQTT properties).
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub address: String,
    pub topic: String,
    pub client_id: String,
    pub qos: u8,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub queue_size: usize,
}

/// A parsed `address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// `host[:port]`, `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (TLS, 8883); IPv6
/// hosts in brackets.
pub fn parse_address(address: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = address.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = address.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some((scheme, _)) = address.split_once("://") {
        return Err(format!(
            "unknown scheme `{scheme}://` (use mqtt:// or mqtts://)"
        ));
    } else {
        (false, address)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("an address has no path (the topic is the `topic` property)".into());
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (host, after) = r
            .split_once(']')
            .ok_or("unclosed `[` around an IPv6 host")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("junk after the IPv6 host")?),
            ),
        }
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("put an IPv6 host in brackets: [::1]:1883".into())
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("`{p}` is not a port number"))?,
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
        tls,
    })
}

fn read_pem(property: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{property}={}: {e}", path.display()))
}

/// The rustls client configuration of `config` (ring as the crypto provider, chosen here so
/// that it does not depend on which rustls features other crates enable).
fn tls_config(config: &Config) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let pem = read_pem("tls-ca-file", path)?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls-ca-file={}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "tls-ca-file={}: no PEM certificate in the file",
                    path.display()
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("tls-ca-file={}: {e}", path.display()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found: set tls-ca-file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&config.cert_file, &config.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let pem = read_pem("tls-cert-file", cert)?;
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls-cert-file={}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "tls-cert-file={}: no PEM certificate in the file",
                    cert.display()
                ));
            }
            let pem = read_pem("tls-key-file", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("tls-key-file={}: no PEM private key: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "tls-cert-file={} / tls-key-file={}: {e}",
                    cert.display(),
                    key.display()
                )
            })
        }
        (Some(_), None) => Err("tls-cert-file is set without tls-key-file".into()),
        (None, Some(_)) => Err("tls-key-file is set without tls-cert-file".into()),
    }
}

/// The longest topic MQTT can carry: its length is a 16-bit field.
const MAX_TOPIC_BYTES: usize = 65_535;

/// Refuses a topic that cannot be published to: empty, longer than [`MAX_TOPIC_BYTES`] (its
/// length would wrap and subscribers get garbage), with the wildcards `+` or `#` (for
/// subscriptions only) or a NUL character (forbidden by MQTT).
pub fn check_topic(topic: &str) -> Result<(), String> {
    let shown = || {
        if topic.len() <= 60 {
            format!("topic={topic}")
        } else {
            let cut = (0..=60)
                .rev()
                .find(|&i| topic.is_char_boundary(i))
                .unwrap_or(0);
            format!("topic={}... ({} bytes)", &topic[..cut], topic.len())
        }
    };
    let why = if topic.is_empty() {
        "empty: give the topic to publish to"
    } else if topic.len() > MAX_TOPIC_BYTES {
        "longer than the 65535 bytes an MQTT topic may have"
    } else if topic.contains('\0') {
        "contains a NUL character, which MQTT forbids in topics"
    } else if topic.contains(['+', '#']) {
        "contains a wildcard (+ or #): those are for subscribing, not for publishing"
    } else {
        return Ok(());
    };
    Err(format!("{}: {why}", shown()))
}

/// The client options of `config`; errors name the property at fault.
/// Unacknowledged QoS 1/2 publishes at a time (rumqttc's default, named for the accounting:
/// a record in flight when the connection breaks may have arrived although counted lost).
const INFLIGHT: u16 = 100;

pub fn options(config: &Config) -> Result<MqttOptions, String> {
    let ep =
        parse_address(&config.address).map_err(|e| format!("address={}: {e}", config.address))?;
    check_topic(&config.topic)?;
    if config.client_id.is_empty() {
        return Err("client-id is empty".into());
    }
    let tls_files = [
        ("tls-ca-file", &config.ca_file),
        ("tls-cert-file", &config.cert_file),
        ("tls-key-file", &config.key_file),
    ];
    if !ep.tls {
        if let Some((name, _)) = tls_files.iter().find(|(_, v)| v.is_some()) {
            return Err(format!(
                "{name} is set but address={} is not mqtts://",
                config.address
            ));
        }
    }
    let mut o = MqttOptions::new(config.client_id.clone(), ep.host.clone(), ep.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    match (&config.username, &config.password) {
        (Some(u), p) => {
            o.set_credentials(u.clone(), p.clone().unwrap_or_default());
        }
        (None, Some(_)) => return Err("password is set without username".into()),
        (None, None) => {}
    }
    if ep.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(config)?)),
        ));
    }
    Ok(o)
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Record counts, shared by the streaming thread, the connection thread and the element's
/// read-only properties.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handed to the client's queue.
    accepted: AtomicU64,
    sent: AtomicU64,
    /// Refused by `publish` (not connected, queue full).
    refused: AtomicU64,
    /// Accepted but never confirmed (connection lost, or stopped first).
    lost: AtomicU64,
    /// Buffers that passed the element, with records or without.
    frames: AtomicU64,
}

impl Counters {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Counts records written by an output other than MQTT.
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::AcqRel);
    }

    /// Buffers that passed the element (`frames-processed`).
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    /// Counts a buffer that passed the element, after its records were written or queued.
    pub fn add_frame(&self) {
        self.frames.fetch_add(1, Ordering::AcqRel);
    }

    pub fn dropped(&self) -> u64 {
        self.refused.load(Ordering::Acquire) + self.lost.load(Ordering::Acquire)
    }

    /// Accepted records neither sent nor lost yet.
    fn outstanding(&self) -> u64 {
        let done = self.sent.load(Ordering::Acquire) + self.lost.load(Ordering::Acquire);
        self.accepted.load(Ordering::Acquire).saturating_sub(done)
    }
}

struct Shared {
    counters: Arc<Counters>,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Why the last record was dropped, recorded when it was (a warning issued after the
    /// broker came back still names the outage, not the queue).
    drop_reason: Mutex<Option<String>>,
    stop: tokio::sync::Notify,
    /// Signalled whenever records are confirmed or lost (for [`Publisher::flush`]).
    progress: (Mutex<()>, Condvar),
}

impl Shared {
    fn dropped_because(&self, why: String) {
        *self.drop_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn progressed(&self) {
        let _guard = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
        self.progress.1.notify_all();
    }
}

/// A connected MQTT publisher.
pub struct Publisher {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Connects to the broker: returns once the broker accepted the connection, or with the
    /// error of the first attempt (unreachable, refused, TLS), naming `address`.
    pub fn connect(config: &Config, counters: Arc<Counters>) -> Result<Self, String> {
        let opts = options(config)?;
        let (client, mut eventloop) = AsyncClient::new(opts, config.queue_size.max(1));
        let mut net = eventloop.network_options();
        net.set_connection_timeout(CONNECT_TIMEOUT_S);
        eventloop.set_network_options(net);
        let shared = Arc::new(Shared {
            counters,
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            drop_reason: Mutex::new(None),
            stop: tokio::sync::Notify::new(),
            progress: (Mutex::new(()), Condvar::new()),
        });
        let (first_tx, first_rx) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the MQTT runtime: {e}"))?;
        let thread = {
            let shared = shared.clone();
            let qos = qos(config.qos);
            std::thread::Builder::new()
                .name("skp-mqtt".into())
                .spawn(move || {
                    runtime.block_on(run(eventloop, shared, qos, first_tx));
                })
                .map_err(|e| format!("cannot start the MQTT thread: {e}"))?
        };
        let mut publisher = Self {
            client,
            topic: config.topic.clone(),
            qos: qos(config.qos),
            shared,
            thread: Some(thread),
        };
        let first = first_rx
            .recv_timeout(Duration::from_secs(CONNECT_TIMEOUT_S + 1))
            .unwrap_or_else(|_| Err("no answer".into()));
        match first {
            Ok(()) => Ok(publisher),
            Err(e) => {
                publisher.shutdown();
                Err(format!(
                    "cannot connect to the MQTT broker at address={}: {e}",
                    config.address
                ))
            }
        }
    }

    /// Queues one message; never blocks. False when it was dropped (not connected, queue
    /// full).
    pub fn publish(&self, payload: Vec<u8>) -> bool {
        let c = &self.shared.counters;
        let refused = if !self.shared.connected.load(Ordering::Acquire) {
            Some(match self.last_error() {
                Some(e) => format!("not connected to the broker ({e})"),
                None => "not connected to the broker".to_string(),
            })
        } else if self
            .client
            .try_publish(self.topic.as_str(), self.qos, false, payload)
            .is_err()
        {
            Some("the queue is full".to_string())
        } else {
            None
        };
        match refused {
            None => {
                c.accepted.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(why) => {
                c.refused.fetch_add(1, Ordering::AcqRel);
                self.shared.dropped_because(why);
                false
            }
        }
    }

    fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the last record was dropped, as it was when it was.
    pub fn drop_reason(&self) -> Option<String> {
        self.shared
            .drop_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until every queued record is confirmed or lost, at most `timeout`. True if
    /// none is left.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &self.shared.progress;
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.shared.counters.outstanding() == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded waits: a notification between the check and the wait is not lost for
            // longer than this.
            let step = (deadline - now).min(Duration::from_millis(50));
            guard = cvar
                .wait_timeout(guard, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Disconnects (gracefully when connected), stops the thread, and counts records still
    /// queued as lost.
    pub fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.shared.connected.load(Ordering::Acquire) && self.client.try_disconnect().is_ok() {
            let deadline = Instant::now() + DISCONNECT_WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.shared.stop.notify_one();
        let _ = thread.join();
        let c = &self.shared.counters;
        c.lost.fetch_add(c.outstanding(), Ordering::AcqRel);
        self.shared.connected.store(false, Ordering::Release);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Publish and PubRel requests in `eventloop.pending` are records that were queued or in
/// flight when the connection broke: count them as lost instead of replaying them later.
fn drop_pending(eventloop: &mut EventLoop, counters: &Counters) -> u64 {
    let lost = eventloop
        .pending
        .drain(..)
        .filter(|r| matches!(r, Request::Publish(_) | Request::PubRel(_)))
        .count() as u64;
    counters.lost.fetch_add(lost, Ordering::AcqRel);
    lost
}

async fn run(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    qos: QoS,
    first: mpsc::Sender<Result<(), String>>,
) {
    let mut first = Some(first);
    let mut backoff = MIN_BACKOFF;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shared.stop.notified() => return,
        };
        let c = &shared.counters;
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = MIN_BACKOFF;
                // Later drops are the queue's, not this old error's.
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                shared.connected.store(true, Ordering::Release);
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                c.sent.fetch_add(1, Ordering::AcqRel);
                shared.progressed();
            }
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                c.sent.fetch_add(1, Ordering::AcqRel);
                shared.progressed();
            }
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => {
                c.sent.fetch_add(1, Ordering::AcqRel);
                shared.progressed();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::Release);
                let lost = drop_pending(&mut eventloop, c);
                let msg = e.to_string();
                gst::debug!(
                    super::CAT,
                    "MQTT connection: {msg}; {lost} queued records lost, retrying in {backoff:?}"
                );
                *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                if lost > 0 {
                    shared.dropped_because(format!("lost with the connection (broker: {msg})"));
                }
                shared.progressed();
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(msg));
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.stop.notified() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ep = |h: &str, p, tls| Endpoint {
            host: h.into(),
            port: p,
            tls,
        };
        assert_eq!(parse_address("localhost"), Ok(ep("localhost", 1883, false)));
        assert_eq!(
            parse_address("10.0.0.2:1884"),
            Ok(ep("10.0.0.2", 1884, false))
        );
        assert_eq!(parse_address("mqtt://b:7/"), Ok(ep("b", 7, false)));
        assert_eq!(
            parse_address("mqtts://broker"),
            Ok(ep("broker", 8883, true))
        );
        assert_eq!(parse_address("mqtts://[::1]:99"), Ok(ep("::1", 99, true)));
        assert_eq!(parse_address("[::1]"), Ok(ep("::1", 1883, false)));
        for (bad, why) in [
            ("", "no host"),
            ("http://b", "scheme"),
            ("b:0", "port"),
            ("b:65536", "port"),
            ("b:x", "port"),
            ("::1", "brackets"),
            ("[::1", "unclosed"),
            ("mqtt://b/topic", "path"),
        ] {
            let e = parse_address(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn option_errors_name_the_property() {
        let good = Config {
            address: "localhost".into(),
            topic: "t".into(),
            client_id: "c".into(),
            queue_size: 4,
            ..Default::default()
        };
        assert!(options(&good).is_ok());
        let check = |edit: &dyn Fn(&mut Config), want: &str| {
            let mut c = good.clone();
            edit(&mut c);
            let e = options(&c)
                .err()
                .unwrap_or_else(|| panic!("{want}: accepted"));
            assert!(e.contains(want), "{want}: {e}");
        };
        check(&|c| c.topic = "a/#".into(), "topic=a/#");
        check(&|c| c.topic = "a/+/b".into(), "wildcard");
        check(&|c| c.topic = String::new(), "topic=: empty");
        // Issue 24 (11): a topic over 65535 bytes was accepted and subscribers got garbage;
        // a NUL was accepted too.
        check(
            &|c| c.topic = "t".repeat(65_536),
            "(65536 bytes): longer than",
        );
        check(&|c| c.topic = "a\0b".into(), "NUL");
        let mut longest = good.clone();
        longest.topic = "t".repeat(65_535);
        assert!(options(&longest).is_ok());
        check(
            &|c| c.ca_file = Some("/x.pem".into()),
            "tls-ca-file is set but",
        );
        check(&|c| c.password = Some("p".into()), "without username");
        check(
            &|c| {
                c.address = "mqtts://localhost".into();
                c.ca_file = Some("/nonexistent/ca.pem".into());
            },
            "tls-ca-file=/nonexistent/ca.pem",
        );
        check(
            &|c| {
                c.address = "mqtts://localhost".into();
                c.cert_file = Some("/nonexistent/c.pem".into());
            },
            "without tls-key-file",
        );
        let dir = std::env::temp_dir().join(format!("skp-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not a certificate\n").unwrap();
        check(
            &|c| {
                c.address = "mqtts://localhost".into();
                c.ca_file = Some(junk.clone());
            },
            "no PEM certificate",
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
