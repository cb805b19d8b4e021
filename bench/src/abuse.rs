//! `deskwire-bench abuse`: the broker under a join spam, seen from a legitimate client's
//! seat. The `deskwire-broker` binary on loopback with a file database; spammers on
//! other loopback addresses send joins with random codes as fast as their sockets carry
//! them (reading every answer, so the broker keeps them); meanwhile a technician and a
//! target set up a session (create, then join with the code) ten times a second. Reported:
//! the set-up's p50/p99 before and during the spam, and the broker's memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deskwire_signal::{decode_broker, encode, BrokerMessage, ClientMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::e2e::report::quantile;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds of spam.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Spamming connections (spread over four loopback addresses).
    #[arg(long, default_value_t = 16)]
    spammers: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) fn run(args: &Args) -> Result<()> {
    if !(1.0..=600.0).contains(&args.seconds) || !(1..=200).contains(&args.spammers) {
        bail!("--seconds must be in 1..=600 and --spammers in 1..=200");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(measure(args))
}

async fn measure(args: &Args) -> Result<()> {
    let dir = tempfile_dir()?;
    let db = format!("sqlite://{}?mode=rwc", dir.join("broker.db").display());
    let exe = std::env::current_exe()?
        .parent()
        .map(|d| d.join("deskwire-broker"))
        .context("no directory of our own")?;
    let mut broker = tokio::process::Command::new(&exe)
        .args(["--listen", "127.0.0.1:0", "--database", &db])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release --workspace)",
                exe.display()
            )
        })?;
    let mut lines = tokio::io::BufReader::new(broker.stdout.take().context("stdout")?).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the broker printed no address")??
            .context("the broker exited")?;
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.trim().to_owned();
        }
    };
    let pid = broker.id().context("no pid")?;

    let calm = Duration::from_secs_f64(args.seconds.min(3.0));
    let quiet = setups(&url, calm).await?;
    let rss_before = rss_kib(pid)?;
    let stop = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut spam = Vec::new();
    for i in 0..args.spammers {
        let url = url.clone();
        spam.push(tokio::spawn(async move {
            spammer(&url, 2 + (i % 4) as u8, stop).await
        }));
    }
    let mut rss_peak = rss_before;
    let sampler = async {
        while Instant::now() < stop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        }
    };
    let (attacked, ()) = tokio::join!(setups(&url, Duration::from_secs_f64(args.seconds)), sampler);
    let attacked = attacked?;
    let mut joins = 0u64;
    for s in spam {
        joins += s.await.unwrap_or(Ok(0)).unwrap_or(0);
    }
    let rss_end = rss_kib(pid)?;
    let after = setups(&url, calm).await?;
    let _ = broker.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    let q = |v: &[f64], p: f64| -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        quantile(&v, p).unwrap_or(f64::NAN)
    };
    #[allow(clippy::print_stdout)]
    {
        println!("| phase | set-ups | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        for (name, v) in [
            ("before", &quiet),
            ("during the spam", &attacked),
            ("after", &after),
        ] {
            println!(
                "| {name} | {} | {:.1} | {:.1} |",
                v.len(),
                q(v, 0.5),
                q(v, 0.99)
            );
        }
        println!();
        println!(
            "spam: {joins} joins in {:.0} s from {} connections ({:.0} a second)",
            args.seconds,
            args.spammers,
            joins as f64 / args.seconds
        );
        println!(
            "broker RSS: {} KiB before, {} KiB at most during, {} KiB at the end ({:+.1} MB)",
            rss_before,
            rss_peak,
            rss_end,
            (rss_peak as f64 - rss_before as f64) / 1024.0
        );
    }
    Ok(())
}

/// Set up sessions (a technician creates, a target joins with the code) back to back,
/// ten a second, for `span`; the time of each from the create to the target's `joined`.
async fn setups(url: &str, span: Duration) -> Result<Vec<f64>> {
    let end = Instant::now() + span;
    let mut times = Vec::new();
    let mut i = 0u8;
    while Instant::now() < end {
        // Technicians from many addresses, as an office's would be: one address may
        // create 30 sessions a minute, and this creates ten a second.
        i = i % 250 + 1;
        let started = Instant::now();
        let mut tech = connect_from(url, [127, 0, 1, i]).await?;
        send(
            &mut tech,
            &ClientMessage::CreateSession {
                token: None,
                resumable: false,
            },
        )
        .await?;
        let code = match recv(&mut tech).await? {
            BrokerMessage::SessionCreated { session, .. } => session,
            other => bail!("expected session_created, got {other:?}"),
        };
        let (mut target, _) = tokio_tungstenite::connect_async(url).await?;
        send(
            &mut target,
            &ClientMessage::Join {
                code: format!("{:06}", code.number()),
                device: None,
            },
        )
        .await?;
        match recv(&mut target).await? {
            BrokerMessage::Joined { .. } => times.push(started.elapsed().as_secs_f64() * 1000.0),
            other => bail!("expected joined, got {other:?}"),
        }
        let _ = tech.close(None).await;
        let _ = target.close(None).await;
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(started.elapsed())).await;
    }
    Ok(times)
}

/// Joins with random codes from 127.0.0.`host` until `stop`, reading every answer; how
/// many were sent.
async fn spammer(url: &str, host: u8, stop: Instant) -> Result<u64> {
    let mut ws = connect_from(url, [127, 0, 0, host]).await?;
    let mut sent = 0u64;
    let mut n = u64::from(host) * 7919;
    while Instant::now() < stop {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let code = format!("{:06}", (n >> 33) % 1_000_000);
        if send(&mut ws, &ClientMessage::Join { code, device: None })
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        // Read the answer: a spammer that reads nothing is cut off as a slow reader.
        if recv(&mut ws).await.is_err() {
            break;
        }
    }
    Ok(sent)
}

/// A WebSocket to `url` from the loopback address `from`.
async fn connect_from(url: &str, from: [u8; 4]) -> Result<Ws> {
    let addr: std::net::SocketAddr = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("a ws:// url")?
        .parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    let tcp = socket.connect(addr).await?;
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<()> {
    ws.send(Message::text(encode(msg))).await?;
    Ok(())
}

async fn recv(ws: &mut Ws) -> Result<BrokerMessage> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no answer within 10 s")?;
        match next {
            Some(Ok(Message::Text(t))) => return Ok(decode_broker(t.as_str())?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => bail!("the connection ended: {other:?}"),
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("deskwire-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
