//! A real MQTT broker (Debian's mosquitto, started per test on a free localhost port): every
//! record once and in order, an outage in the middle of a live stream, EOS while the broker is
//! away, TLS with client certificates, and a password file.

use super::*;

// --- The broker ---------------------------------------------------------------------------

fn mosquitto_bin() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto not installed: run scripts/install-deps.sh")
}

/// A mosquitto on 127.0.0.1:`port` with a config of its own (anonymous, no persistence).
struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(name: &str, extra: &str) -> Self {
        let port = free_port();
        let conf = scratch().join(format!("{name}.conf"));
        // Started as root, mosquitto becomes the `mosquitto` user, who cannot read the
        // certificates and password files under a private checkout (a clone in `mktemp -d`).
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}{extra}"
            ),
        )
        .unwrap();
        let mut b = Self {
            child: None,
            port,
            conf,
        };
        b.restart();
        b
    }

    /// (Re)starts it on the same port; returns once it accepts connections.
    fn restart(&mut self) {
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("mosquitto exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "mosquitto does not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn address(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A subscriber on its own thread; resubscribes after every reconnection.
struct Subscriber {
    client: rumqttc::Client,
    messages: mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    fn new(port: u16, topic: &str) -> Self {
        let mut opts = rumqttc::MqttOptions::new(format!("sub-{}", free_port()), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        let (tx, messages) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, t, s) = (client.clone(), topic.to_string(), stop.clone());
        std::thread::spawn(move || {
            use rumqttc::{Event, Packet};
            for ev in conn.iter() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(t.as_str(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p.payload.to_vec()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker is away: retry (rumqttc reconnects on the next poll).
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Self {
            client,
            messages,
            stop,
        }
    }

    /// Messages until `marker` (published by the test after everything else).
    fn until_marker(&self, marker: &[u8], secs: u64) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.messages.recv_timeout(left).expect("marker in time");
            if m == marker {
                return out;
            }
            out.push(m);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
    }
}

#[test]
fn broker_receives_every_frame_once_in_order_equal_to_the_metadata() {
    let broker = Broker::start("once", "");
    let topic = "skp/test/once";
    let sub = Subscriber::new(broker.port, topic);
    let n = 8;
    let (metas, _) = model_pipeline(
        n,
        &format!(
            "address={} topic={topic} mqtt-qos=at-least-once client-id=skp-once",
            broker.address()
        ),
    );
    assert_eq!(metas.len(), n as usize);
    // EOS waited for the broker's acknowledgements: a marker sent now arrives after them.
    sub.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, b"end".to_vec())
        .unwrap();
    let got = sub.until_marker(b"end", 20);
    assert_eq!(got.len(), n as usize, "every frame exactly once");
    for (i, (p, m)) in got.iter().zip(&metas).enumerate() {
        assert_record_is(&record(p), m, i as u64, 64, 48);
    }
}

#[test]
fn eos_while_the_broker_is_away_is_bounded_and_every_record_is_counted() {
    let mut broker = Broker::start("away", "");
    let mut h = harness(
        &format!(
            "address={} flush-timeout=300 mqtt-qos=at-least-once",
            broker.address()
        ),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let el = h.element().unwrap();
    for i in 0..3 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
    }
    wait_for("3 acknowledged records", 10, || {
        el.property::<u64>("records-sent") == 3
    });
    broker.kill();
    // Buffers keep flowing while the broker is away.
    for i in 3..8 {
        h.push(buffer(i, Some(&meta(i, false)))).unwrap();
        h.pull().unwrap();
    }
    let t = Instant::now();
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "EOS took {:?}",
        t.elapsed()
    );
    drop(h); // stops the element: what is still queued counts as dropped
    assert_eq!(el.property::<u64>("records-sent"), 3);
    assert_eq!(el.property::<u64>("records-dropped"), 5);
}

/// The publish element's dropped-records warning, among whatever else the pipeline says
/// within 10 s; returns the count it reports.
fn dropped_records_warning(bus: &gst::Bus) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Warning],
            )
            .expect("a dropped-records warning");
        if let gst::MessageView::Warning(w) = msg.view() {
            if let Some(d) = w
                .details()
                .filter(|d| d.name() == "stablekeypointspublish-dropped")
            {
                assert!(w.error().to_string().contains("Dropped"), "{}", w.error());
                // The reason recorded when records were dropped: the outage, never the
                // queue (256 places, a few records).
                let reason = d.get::<String>("reason").unwrap();
                assert!(
                    reason.contains("not connected to the broker")
                        || reason.contains("lost with the connection"),
                    "{reason}"
                );
                break d.get::<u64>("records-dropped").unwrap();
            }
        }
    }
}

/// After EOS: the records received by `sub` on `topic` (`got` and the rest) were each sent
/// once and in order, equal to the `metas`; at most rumqttc's in-flight window of records
/// counted as dropped (`sent` of them sent) reached the broker before it died.
fn received_once_in_order(
    sub: &Subscriber,
    topic: &str,
    mut got: Vec<Record>,
    sent: u64,
    metas: &[FrameKeypoints],
) {
    sub.client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, b"end".to_vec())
        .unwrap();
    got.extend(sub.until_marker(b"end", 20).iter().map(|p| record(p)));
    // Records in flight when the broker died count as dropped although the broker may have
    // forwarded them before dying: at most rumqttc's in-flight window (100) of them.
    assert!(
        got.len() as u64 <= sent + 100,
        "received {} records, sent {sent}",
        got.len()
    );
    for pair in got.windows(2) {
        assert!(pair[1].frame > pair[0].frame, "each record once, in order");
    }
    for r in &got {
        assert_record_is(r, &metas[r.frame as usize], r.frame, 64, 48);
    }
}

#[test]
fn broker_outage_mid_stream_drops_and_counts_then_delivery_resumes() {
    let mut broker = Broker::start("outage", "");
    let topic = "skp/test/outage";
    let sub = Subscriber::new(broker.port, topic);
    init();
    // A live source at 30 fps: the stream goes on while the broker is away.
    let desc = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! stablekeypoints {} inference-interval=3 \
         ! stablekeypointspublish name=pub address={} topic={topic} mqtt-qos=at-least-once flush-timeout=2000 \
         ! fakesink name=sink sync=false",
        props(),
        broker.address()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let _stop = Stopped(pipeline.clone());
    let publ = pipeline.by_name("pub").unwrap();
    let metas = collect_metas(&pipeline, "sink");
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut got: Vec<Record> = Vec::new();
    let receive = |got: &mut Vec<Record>, until: &dyn Fn(&[Record]) -> bool, secs| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !until(got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = sub.messages.recv_timeout(left).expect("records in time");
            got.push(record(&m));
        }
    };
    receive(&mut got, &|g| g.len() >= 5, 60);

    broker.kill();
    wait_for("dropped records", 20, || {
        publ.property::<u64>("records-dropped") > 0
    });
    let dropped_at_warning = dropped_records_warning(&bus);
    assert!(dropped_at_warning > 0);
    // Frames from here on reach the element after the broker went away.
    let outage = metas.lock().unwrap().len() as u64;

    broker.restart();
    receive(
        &mut got,
        &|g| g.last().is_some_and(|r| r.frame >= outage),
        30,
    );

    pipeline.send_event(gst::event::Eos::new());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(20)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    let (sent, dropped) = (
        publ.property::<u64>("records-sent"),
        publ.property::<u64>("records-dropped"),
    );
    pipeline.set_state(gst::State::Null).unwrap();
    let metas = std::mem::take(&mut *metas.lock().unwrap());
    // After EOS every record is accounted for exactly once.
    assert_eq!(
        sent + dropped,
        metas.len() as u64,
        "sent {sent} + dropped {dropped}"
    );
    assert!(dropped > 0);
    received_once_in_order(&sub, topic, got, sent, &metas);
}

/// The PEM files of a test CA, another CA, and a server and a client certificate signed by
/// the first, in `dir`: (ca, other ca, server cert, server key, client cert, client key).
fn tls_files(dir: &Path) -> [PathBuf; 6] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("skp test CA");
    let (other_ca, _) = ca("another CA");
    let leaf = |names: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client_pem, client_key) = leaf(vec![], "client");
    let ca_file = write("ca.pem", ca_cert.pem());
    let other_file = write("other-ca.pem", other_ca.pem());
    let (sc, sk) = (
        write("server.pem", server_pem),
        write("server.key", server_key),
    );
    let (cc, ck) = (
        write("client.pem", client_pem),
        write("client.key", client_key),
    );
    [ca_file, other_file, sc, sk, cc, ck]
}

#[test]
fn tls_with_client_certificates_and_its_errors() {
    let dir = scratch().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let [ca_file, other_file, sc, sk, cc, ck] = tls_files(&dir);
    let broker = Broker::start(
        "tls",
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            ca_file.display(),
            sc.display(),
            sk.display()
        ),
    );
    let address = format!("mqtts://127.0.0.1:{}", broker.port);
    let tls = format!(
        "address={address} mqtt-qos=at-least-once tls-ca-file={}",
        ca_file.display()
    );
    let el = publish_frames(
        &format!(
            "{tls} tls-cert-file={} tls-key-file={}",
            cc.display(),
            ck.display()
        ),
        4,
    )
    .unwrap();
    assert_eq!(
        el.property::<u64>("records-sent"),
        4,
        "acknowledged over TLS"
    );
    // The broker wants a client certificate.
    let err = publish_frames(&tls, 1).unwrap_err();
    assert!(err.contains(&format!("address={address}")), "{err}");
    // A broker certificate from another CA is refused.
    let err = publish_frames(
        &format!(
            "address={address} tls-ca-file={} tls-cert-file={} tls-key-file={}",
            other_file.display(),
            cc.display(),
            ck.display()
        ),
        1,
    )
    .unwrap_err();
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // A key that is not a key.
    let err = publish_frames(
        &format!(
            "{tls} tls-cert-file={} tls-key-file={}",
            cc.display(),
            cc.display()
        ),
        1,
    )
    .unwrap_err();
    assert!(
        err.contains(&format!("tls-key-file={}", cc.display())),
        "{err}"
    );
}

#[test]
fn username_and_password() {
    let passwd = scratch().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["skp", "s3cret"])
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(status.success());
    let broker = Broker::start(
        "auth",
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    );
    let base = format!(
        "address={} mqtt-qos=at-least-once username=skp",
        broker.address()
    );
    let el = publish_frames(&format!("{base} password=s3cret"), 3).unwrap();
    assert_eq!(el.property::<u64>("records-sent"), 3);
    assert_eq!(
        el.property::<String>("password"),
        "*****",
        "never read back"
    );
    let err = publish_frames(&format!("{base} password=wrong"), 1).unwrap_err();
    assert!(
        err.contains(&broker.address()) && err.contains("NotAuthorized"),
        "{err}"
    );
}
