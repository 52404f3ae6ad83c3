//! The wake-up listener (`LISTEN`/`NOTIFY`) through an outage: its store
//! reaches PostgreSQL through a TCP relay that the test cuts (every
//! connection closed, new ones refused) and later restores. While cut off,
//! the listener retries every second but logs it once, through `tracing`;
//! it logs once more when it listens again, and a send then wakes the
//! watch again.
//!
//! Its own test binary: it installs the process's global `tracing`
//! subscriber, which the listener's thread logs to.

mod support;

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Name, SystemClock};
use mayfly_state::{OutgoingMessage, QueueStore};
use mayfly_state_postgres::PostgresStore;

/// A TCP relay to `upstream` that can be cut and restored.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_cut, accept_open) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accept_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let mut open = accept_open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, open }
    }

    /// Close every relayed connection and refuse new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<u8>>>);

impl Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logged {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, text: &str) -> usize {
        self.text().matches(text).count()
    }
}

const LOST: &str = "wake-up listener cannot reach PostgreSQL";
const BACK: &str = "wake-up listener reached PostgreSQL again";

#[test]
fn a_listener_cut_off_from_postgres_logs_once_retries_and_logs_again_when_it_listens() {
    let logged = Logged::default();
    let writer = logged.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish(),
    )
    .unwrap();

    let database = support::TestDatabase::create();
    let (server, name) = database.url.rsplit_once('/').unwrap();
    let address = server.rsplit_once('@').map_or(server, |(_, address)| address).to_owned();
    let relay = Relay::start(address.clone());
    let relayed = database.url.replace(&address, &format!("127.0.0.1:{}", relay.port));
    assert!(relayed.ends_with(name), "{relayed}");
    let watched = PostgresStore::open(&relayed, Arc::new(SystemClock)).expect("open the store through the relay");
    let sender = PostgresStore::open(&database.url, Arc::new(SystemClock)).expect("open the store directly");
    let work = Name::new("work").unwrap();
    sender.create_queue(&work, &QueueConfig::default(), &[]).unwrap();

    let (told, heard) = std::sync::mpsc::channel::<String>();
    let _watch = watched
        .watch_messages(Arc::new(move |queue: &str| {
            let _ = told.send(queue.to_owned());
        }))
        .unwrap()
        .expect("PostgreSQL wakes receivers");
    let heard_a_send = |within: Duration| {
        let started = Instant::now();
        while started.elapsed() < within {
            sender.send_messages(&work, &[OutgoingMessage::new("hello")]).unwrap();
            if heard.recv_timeout(Duration::from_millis(300)).is_ok() {
                while heard.recv_timeout(Duration::from_millis(100)).is_ok() {}
                return true;
            }
        }
        false
    };
    assert!(heard_a_send(Duration::from_secs(10)), "the listener never heard a send");
    assert_eq!(logged.count(LOST), 0, "{}", logged.text());

    // Cut off for a few of its one-second retries: said once.
    relay.cut();
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(logged.count(LOST), 1, "the outage should be logged exactly once:\n{}", logged.text());
    assert!(!heard_a_send(Duration::from_secs(1)), "a cut-off listener heard a send");

    // Restored: said once more, and sends wake the watch again.
    relay.restore();
    let started = Instant::now();
    while logged.count(BACK) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no reconnection logged:\n{}", logged.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(heard_a_send(Duration::from_secs(5)), "no wake-up after the listener reconnected");
    std::thread::sleep(Duration::from_millis(1_500));
    let text = logged.text();
    assert_eq!((text.matches(LOST).count(), text.matches(BACK).count()), (1, 1), "{text}");
    println!("{text}");
}
