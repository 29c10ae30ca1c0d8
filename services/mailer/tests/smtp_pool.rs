//! The plain SMTP pool against a real SMTP server on loopback (mailin-embedded), with a TCP
//! proxy in between where a test needs to cut connections the way a relay restart does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::extension::ClientId;
use newsletter_mailer::{
    MailTransport, PlainSmtpPool, SMTP_CONNECTIONS, SendError, SmtpMailTransport,
};
use support::SmtpServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn mail(to: &str) -> Message {
    Message::builder()
        .from("Nyhedsbrev <news@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("Bekræft din tilmelding")
        .body(String::from("Hej, bekræft venligst."))
        .unwrap()
}

fn pool(port: u16) -> PlainSmtpPool {
    PlainSmtpPool::new(
        "127.0.0.1".to_owned(),
        port,
        ClientId::Domain("client.test".to_owned()),
        4,
        Duration::from_secs(10),
    )
}

/// Never checks idle connections with NOOP and never closes them for idling.
const NEVER: Duration = Duration::from_secs(3600);

/// Forwards loopback TCP to the SMTP server; `cut` closes every connection it carries now.
struct CuttingProxy {
    port: u16,
    cut: watch::Sender<u64>,
}

impl CuttingProxy {
    async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = watch::channel(0_u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mails_all_arrive_over_at_most_the_pooled_connections() {
    let server = SmtpServer::start();
    let transport = Arc::new(SmtpMailTransport::from_url(&server.url()).unwrap());
    assert!(transport.is_plain_pool());
    let sends = (0..40).map(|i| {
        let transport = Arc::clone(&transport);
        tokio::spawn(async move {
            transport
                .send(mail(&format!("reader{i}@example.org")))
                .await
        })
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap().unwrap();
    }
    let mut recipients: Vec<String> = server.received().into_iter().flat_map(|r| r.to).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40, "every mail arrived once");
    let sessions = server.sessions();
    assert!(
        (1..=SMTP_CONNECTIONS as usize).contains(&sessions),
        "{sessions} SMTP sessions for 40 mails"
    );
}

#[tokio::test]
async fn an_idle_connection_carries_the_next_mail() {
    let server = SmtpServer::start();
    let pool = pool(server.port).with_idle_limits(NEVER, NEVER);
    pool.send(&mail("a@example.org")).await.unwrap();
    assert_eq!(pool.idle_connections(), 1);
    pool.send(&mail("b@example.org")).await.unwrap();
    pool.check().await.unwrap();
    assert_eq!(
        server.sessions(),
        1,
        "one connection for two mails and a check"
    );
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_connection_the_relay_dropped_while_idle_fails_its_noop_and_is_replaced() {
    let server = SmtpServer::start();
    let proxy = CuttingProxy::start(server.port).await;
    // NOOP before every reuse.
    let pool = pool(proxy.port).with_idle_limits(Duration::ZERO, NEVER);
    pool.send(&mail("a@example.org")).await.unwrap();
    proxy.cut();
    pool.send(&mail("b@example.org")).await.unwrap();
    assert_eq!(server.sessions(), 2, "the dropped connection was replaced");
    assert_eq!(server.received().len(), 2, "no mail lost");
}

#[tokio::test]
async fn a_connection_dropped_without_a_noop_fails_as_unavailable_and_is_not_reused() {
    let server = SmtpServer::start();
    let proxy = CuttingProxy::start(server.port).await;
    let pool = pool(proxy.port).with_idle_limits(NEVER, NEVER);
    pool.send(&mail("a@example.org")).await.unwrap();
    proxy.cut();
    // Let the close reach the client's socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed = pool.send(&mail("b@example.org")).await;
    assert!(
        matches!(failed, Err(SendError::Unavailable(_))),
        "a dead connection is an outage (retried without limit), not a refusal: {failed:?}"
    );
    assert_eq!(
        pool.idle_connections(),
        0,
        "the broken connection was dropped"
    );
    pool.send(&mail("b@example.org")).await.unwrap();
    assert_eq!(server.sessions(), 2);
    let recipients: Vec<String> = server.received().into_iter().flat_map(|r| r.to).collect();
    assert_eq!(recipients, ["a@example.org", "b@example.org"]);
}

#[tokio::test]
async fn a_connection_idle_past_the_limit_is_closed_and_a_new_one_opened() {
    let server = SmtpServer::start();
    let pool = pool(server.port).with_idle_limits(NEVER, Duration::ZERO);
    pool.send(&mail("a@example.org")).await.unwrap();
    pool.send(&mail("b@example.org")).await.unwrap();
    assert_eq!(server.sessions(), 2);
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn refusals_are_sorted_and_the_pool_keeps_working() {
    let rejecting = SmtpServer::start_replying(0, 550);
    let pool_550 = pool(rejecting.port);
    assert!(matches!(
        pool_550.send(&mail("gone@example.org")).await,
        Err(SendError::Permanent(_))
    ));
    pool_550.check().await.unwrap();

    let greylisting = SmtpServer::start_replying(0, 451);
    let pool_451 = pool(greylisting.port);
    assert!(matches!(
        pool_451.send(&mail("later@example.org")).await,
        Err(SendError::Transient(_))
    ));
    assert!(greylisting.received().is_empty());
}

#[tokio::test]
async fn no_relay_is_unavailable() {
    let pool = pool(SmtpServer::free_port());
    assert!(matches!(
        pool.send(&mail("a@example.org")).await,
        Err(SendError::Unavailable(_))
    ));
    assert!(matches!(pool.check().await, Err(SendError::Unavailable(_))));
}

#[tokio::test]
async fn a_relay_that_never_greets_is_unavailable_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds the connection, says nothing.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let pool = PlainSmtpPool::new(
        "127.0.0.1".to_owned(),
        port,
        ClientId::Domain("client.test".to_owned()),
        1,
        Duration::from_millis(200),
    );
    assert!(matches!(
        pool.send(&mail("a@example.org")).await,
        Err(SendError::Unavailable(_))
    ));
}
