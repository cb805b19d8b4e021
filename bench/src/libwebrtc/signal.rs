//! `deskwire-bench libwebrtc-signal` (hidden): the libwebrtc peer's pages and their
//! signalling, run inside the viewer's namespace so the sender's offer crosses the emulated
//! link as the deskwire broker's messages do. A small HTTP/1.1 server, one request per
//! connection: `GET /sender.html`, `/receiver.html` and the `/common.js` they import;
//! `POST`/`GET` `/offer` and `/answer` (`204` until posted); `POST /event/NAME` prints
//! `event NAME BODY` on stdout, which is how the bench hears "connected",
//! "measure-start", the report and errors.

// Stdout is the line protocol the bench reads.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const SENDER: &str = include_str!("sender.html");
const RECEIVER: &str = include_str!("receiver.html");
const COMMON: &str = include_str!("common.js");

/// Bodies larger than this are refused: a report of 60 fps for a few minutes is far below.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct SignalArgs {
    #[arg(long)]
    listen: SocketAddr,
}

pub(crate) fn run(args: &SignalArgs) -> Result<()> {
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", args.listen);
    // The bench closes our stdin when it is done with us.
    std::thread::Builder::new()
        .name("bench-signal-stdin".into())
        .spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            std::process::exit(0);
        })?;
    let mut posted: HashMap<String, String> = HashMap::new();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if let Err(e) = serve(conn, &mut posted) {
            tracing::debug!("signal request: {e:#}");
        }
    }
    Ok(())
}

fn serve(conn: TcpStream, posted: &mut HashMap<String, String>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().context("Content-Length")?;
            }
        }
    }
    if length > MAX_BODY {
        bail!("a {length}-byte body");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = target.split('?').next().unwrap_or_default();
    let (status, kind, reply) = match (method.as_str(), path) {
        ("GET", "/sender.html") => ("200 OK", "text/html", SENDER.to_owned()),
        ("GET", "/receiver.html") => ("200 OK", "text/html", RECEIVER.to_owned()),
        ("GET", "/common.js") => ("200 OK", "text/javascript", COMMON.to_owned()),
        ("POST", "/offer" | "/answer") => {
            posted.insert(path.to_owned(), body);
            ("200 OK", "text/plain", String::new())
        }
        ("GET", "/offer" | "/answer") => match posted.get(path) {
            Some(sdp) => ("200 OK", "application/sdp", sdp.clone()),
            None => ("204 No Content", "text/plain", String::new()),
        },
        ("POST", p) if p.starts_with("/event/") => {
            let name = &p["/event/".len()..];
            // One line per event: the pages send JSON.stringify output or short words.
            println!("event {name} {}", body.replace(['\r', '\n'], " "));
            ("200 OK", "text/plain", String::new())
        }
        ("GET", "/favicon.ico") => ("404 Not Found", "text/plain", String::new()),
        _ => ("404 Not Found", "text/plain", format!("no {method} {path}")),
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one raw request to `listener` and serves it; returns the response.
    fn exchange(
        listener: &TcpListener,
        posted: &mut HashMap<String, String>,
        request: &str,
    ) -> String {
        let addr = listener.local_addr().unwrap();
        let request = request.to_owned();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            let _ = c.read_to_string(&mut reply);
            reply
        });
        let (conn, _) = listener.accept().unwrap();
        let served = serve(conn, posted);
        let reply = client.join().unwrap();
        if let Err(e) = served {
            return format!("refused: {e}");
        }
        reply
    }

    #[test]
    fn an_offer_is_relayed_once_posted_and_unknown_paths_are_not_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut posted = HashMap::new();
        let get = "GET /offer HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(exchange(&listener, &mut posted, get).starts_with("HTTP/1.1 204"));
        let post = "POST /offer HTTP/1.1\r\nContent-Length: 5\r\n\r\nv=0\r\n";
        assert!(exchange(&listener, &mut posted, post).starts_with("HTTP/1.1 200"));
        let reply = exchange(&listener, &mut posted, get);
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("\r\n\r\nv=0\r\n"));
        let page = exchange(
            &listener,
            &mut posted,
            "GET /receiver.html?x=1 HTTP/1.1\r\n\r\n",
        );
        assert!(page.contains("requestVideoFrameCallback"));
        let other = exchange(&listener, &mut posted, "GET /etc/passwd HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn an_oversized_body_is_refused_before_it_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut posted = HashMap::new();
        let huge = format!(
            "POST /answer HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(exchange(&listener, &mut posted, &huge).starts_with("refused"));
        assert!(posted.is_empty());
    }
}
