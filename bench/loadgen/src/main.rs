//! Drives one webhook endpoint with distinct, validly signed Zoho Desk `Ticket_Add` events over
//! keep-alive HTTP/1.1 connections and prints one JSON line of results.
//!
//! Why not wrk with one pre-signed body: deskhook deduplicates deliveries, and a duplicate (or a
//! rejected request) is cheaper than a new event, so a single repeated body would flatter it.
//! Every request here carries a new ticket id and event time and a correct HMAC-SHA256.
//!
//! Signing each body costs the generator almost nothing: the varying fields are the last bytes
//! of the body, so the HMAC state after the constant prefix is computed once and cloned; each
//! request hashes only its last block or two. The generator shares the cores with the server
//! under test, so its own cost matters.
//!
//! By default each connection sends its next request as soon as the last one is answered (closed
//! loop). With `--rate R` the connections together send R requests per second on a fixed
//! schedule, as wrk2 does: a request that is due while the server is still busy goes out late
//! rather than never, and its latency counts from when it was due. A closed loop would instead
//! wait out a stall and record only the one slow request (coordinated omission). A request sent
//! on time counts from when it was sent: the timer's own lateness (up to a millisecond) is the
//! generator's, not the server's.
//!
//! Usage: `loadgen --url http://127.0.0.1:5000/webhook/zoho-desk --size 4096 --connections 64
//! --duration 8 [--warmup 1] [--requests N] [--rate R] [--threads 2] [--secret bench-secret]
//! [--header X-Zoho-Signature] [--timeout 5]`

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HmacSha256 = Hmac<Sha256>;

/// Filler for the ticket description, as in the peers' payload generator.
const SENTENCE: &str = "The customer reports that the scheduled export of monthly invoices \
    stopped after the settings page was saved; steps to reproduce and the expected result are \
    listed below. ";

struct Args {
    host: String,
    port: u16,
    path: String,
    size: usize,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    requests: Option<u64>,
    /// Total requests per second across all connections; `None` for a closed loop.
    rate: Option<f64>,
    threads: usize,
    secret: String,
    header: String,
    timeout: Duration,
}

fn parse_args() -> Args {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let Some(name) = key.strip_prefix("--") else {
            die(&format!("unexpected argument {key}"));
        };
        let value = it
            .next()
            .unwrap_or_else(|| die(&format!("--{name} needs a value")));
        map.insert(name.to_owned(), value);
    }
    let get = |k: &str, default: &str| map.get(k).cloned().unwrap_or_else(|| default.to_owned());
    let num = |k: &str, default: &str| -> f64 {
        get(k, default)
            .parse()
            .unwrap_or_else(|_| die(&format!("--{k} must be a number")))
    };
    let url = get("url", "http://127.0.0.1:5000/webhook/zoho-desk");
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die("only http:// URLs are supported"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
    Args {
        host: host.to_owned(),
        port: port.parse().unwrap_or_else(|_| die("bad port")),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        size: num("size", "4096") as usize,
        connections: num("connections", "64") as usize,
        duration: Duration::from_secs_f64(num("duration", "8")),
        warmup: Duration::from_secs_f64(num("warmup", "1")),
        requests: map.get("requests").map(|_| num("requests", "0") as u64),
        rate: map.get("rate").map(|_| positive(num("rate", "0"), "rate")),
        threads: num("threads", "2") as usize,
        secret: get("secret", "bench-secret"),
        header: get("header", "X-Zoho-Signature"),
        timeout: Duration::from_secs_f64(num("timeout", "5")),
    }
}

/// `value` if it is a positive finite number; `parse` also accepts "inf" and "NaN".
fn positive(value: f64, name: &str) -> f64 {
    if !(value.is_finite() && value > 0.0) {
        die(&format!("--{name} must be a positive finite number"));
    }
    value
}

fn die(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(2)
}

/// The constant part of every body: a native Zoho array of one `Ticket_Add` event whose
/// payload ends with the ticket id, followed by the event time; both vary per request.
fn body_prefix(size: usize) -> Vec<u8> {
    let build = |n: usize| {
        format!(
            concat!(
                r#"[{{"eventType":"Ticket_Add","orgId":"700000001","payload":{{"ticketNumber":"10457","#,
                r#""subject":"Monthly invoice export no longer runs","description":"<div>{}</div>","#,
                r#""departmentId":"412000000006907","contactId":"412000000098001","#,
                r#""email":"sam.example@example.com","phone":"+1 555 0100","status":"Open","#,
                r#""statusType":"Open","priority":"High","channel":"Email","category":"Billing","#,
                r#""subCategory":"Exports","language":"English","assigneeId":null,"teamId":null,"#,
                r#""createdTime":"2024-11-28T11:00:00.000Z","modifiedTime":"2024-11-28T11:00:00.000Z","#,
                r#""dueDate":"2024-11-30T11:00:00.000Z","#,
                r#""webUrl":"https://desk.example.com/support/example/ShowHomePage.do#Cases/dv/412000000123457","#,
                r#""customFields":{{"Product":"Reports","Plan":"Standard"}},"#,
                r#""cf":{{"cf_product":"Reports","cf_plan":"Standard"}},"threadCount":"1","#,
                r#""commentCount":"0","isSpam":false,"classification":"Problem","id":""#
            ),
            SENTENCE.repeat(n)
        )
    };
    // The suffix adds about 60 bytes; grow the description until the whole body reaches `size`.
    let mut n = 0;
    while build(n).len() + 60 < size {
        n += 1;
    }
    build(n).into_bytes()
}

/// Everything the connections share.
struct Shared {
    args: Args,
    prefix: Vec<u8>,
    /// The HMAC state after the prefix; cloned per request.
    mac: HmacSha256,
    /// Distinguishes this run's ticket ids from earlier runs against the same server.
    nonce: u64,
    /// Requests started, for `--requests`.
    started: AtomicU64,
    /// When the run began: `--rate`'s schedule counts from here.
    began: Instant,
    record_from: Instant,
    end: Instant,
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    status: BTreeMap<u16, u64>,
    events: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
    connects: u64,
}

struct Response {
    status: u16,
    close: bool,
    body_start: usize,
    body_end: usize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u64
}

async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Response> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut close = status_line.starts_with("HTTP/1.0");
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "chunked"));
        }
    }
    let body_end = header_end + length;
    while buf.len() < body_end {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Response {
        status,
        close,
        body_start: header_end,
        body_end,
    })
}

/// When connection `index`'s `k`-th request (from 0) is due under `--rate`, or `None` in a closed
/// loop. The connections take turns, `1 / rate` apart, so the load is even and totals `rate`.
/// A slot too far off to represent is past the end of the run.
fn due(shared: &Shared, index: usize, k: u64) -> Option<Instant> {
    let rate = shared.args.rate?;
    let slot = index as f64 + k as f64 * shared.args.connections as f64;
    let offset = Duration::try_from_secs_f64(slot / rate).ok();
    Some(
        offset
            .and_then(|d| shared.began.checked_add(d))
            .unwrap_or(shared.end),
    )
}

/// One keep-alive connection sending requests back to back, or on `--rate`'s schedule;
/// reconnects when the server closes.
async fn connection(index: usize, shared: Arc<Shared>) -> Stats {
    let args = &shared.args;
    let mut stats = Stats::default();
    let mut stream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(shared.prefix.len() + 512);
    let mut response = Vec::with_capacity(4096);
    let mut seq: u64 = 0;
    loop {
        // Under `--rate` a request late past the end is not sent: the run keeps its length.
        let due = due(&shared, index, seq);
        if Instant::now() >= shared.end || due.is_some_and(|t| t >= shared.end) {
            break;
        }
        if let Some(limit) = args.requests
            && shared.started.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        seq += 1;
        let suffix = format!(
            r#"{:06}{:04}{:09}"}},"eventTime":"{}"}}]"#,
            shared.nonce,
            index,
            seq,
            1_732_791_600_000u64 + seq
        );
        let mut mac = shared.mac.clone();
        mac.update(suffix.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        request.clear();
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n{}: {}\r\n\
                 Content-Length: {}\r\n\r\n",
                args.path,
                args.host,
                args.port,
                args.header,
                signature,
                shared.prefix.len() + suffix.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(&shared.prefix);
        request.extend_from_slice(suffix.as_bytes());
        // Early: wait for the slot. Late (the server held the last request past this slot):
        // send at once and count the latency from the slot, so the time queued behind the slow
        // answer shows; the connection catches up without skipping any slot.
        let late_from = match due {
            Some(due) if Instant::now() >= due => Some(due),
            Some(due) => {
                tokio::time::sleep_until(due.into()).await;
                None
            }
            None => None,
        };

        if stream.is_none() {
            match TcpStream::connect((args.host.as_str(), args.port)).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stats.connects += 1;
                    stream = Some(s);
                }
                Err(_) => {
                    // The slot is spent, as the request counts against `--requests`.
                    *stats.errors.entry("connect").or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let sent = Instant::now();
        // A timer that wakes late is the generator's delay, not the server's: an early
        // connection's latency counts from when it actually sent.
        let origin = late_from.unwrap_or(sent);
        let exchange = async {
            s.write_all(&request).await?;
            read_response(s, &mut response).await
        };
        match tokio::time::timeout(args.timeout, exchange).await {
            Ok(Ok(r)) => {
                if origin >= shared.record_from {
                    let us = origin.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    stats.latencies_us.push(us);
                    *stats.status.entry(r.status).or_default() += 1;
                    let body = &response[r.body_start..r.body_end];
                    for (name, needle) in [
                        ("queued", &b"\"status\":\"queued\""[..]),
                        ("duplicate", b"\"status\":\"duplicate\""),
                        ("ignored", b"\"status\":\"ignored\""),
                    ] {
                        let n = count(body, needle);
                        if n > 0 {
                            *stats.events.entry(name).or_default() += n;
                        }
                    }
                }
                if r.close {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                *stats.errors.entry("io").or_default() += 1;
                stream = None;
            }
            Err(_) => {
                // Zoho gives a delivery 5 s: a later answer is a lost event.
                *stats.errors.entry("timeout").or_default() += 1;
                stream = None;
            }
        }
    }
    stats
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn json_map<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    let fields: Vec<String> = map.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

fn main() {
    let args = parse_args();
    let prefix = body_prefix(args.size);
    let mut mac = HmacSha256::new_from_slice(args.secret.as_bytes()).expect("any key length");
    mac.update(&prefix);
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        % 1_000_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    let began = Instant::now();
    let (record_from, end) = match args.requests {
        // A fixed number of requests: all recorded, no time limit beyond a generous one.
        Some(_) => (began, began + Duration::from_secs(600)),
        None => (began + args.warmup, began + args.warmup + args.duration),
    };
    let connections = args.connections;
    let rate = args.rate.map_or("null".to_owned(), |r| r.to_string());
    let body_bytes = prefix.len() + 60;
    let shared = Arc::new(Shared {
        args,
        prefix,
        mac,
        nonce,
        started: AtomicU64::new(0),
        began,
        record_from,
        end,
    });
    let all = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|i| tokio::spawn(connection(i, shared.clone())))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.expect("connection task"));
        }
        all
    });
    let measured = match shared.args.requests {
        Some(_) => began.elapsed(),
        None => shared.args.duration,
    };
    let mut total = Stats::default();
    for s in all {
        total.latencies_us.extend(s.latencies_us);
        total.connects += s.connects;
        for (k, v) in s.status {
            *total.status.entry(k).or_default() += v;
        }
        for (k, v) in s.events {
            *total.events.entry(k).or_default() += v;
        }
        for (k, v) in s.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    total.latencies_us.sort_unstable();
    let n = total.latencies_us.len();
    println!(
        "{{\"requests\":{n},\"seconds\":{:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\
         \"max_ms\":{:.3},\"body_bytes\":{body_bytes},\"connections\":{connections},\
         \"rate\":{rate},\"connects\":{},\"status\":{},\"events\":{},\"errors\":{}}}",
        measured.as_secs_f64(),
        n as f64 / measured.as_secs_f64(),
        percentile_ms(&total.latencies_us, 50.0),
        percentile_ms(&total.latencies_us, 99.0),
        percentile_ms(&total.latencies_us, 100.0),
        total.connects,
        json_map(&total.status),
        json_map(&total.events),
        json_map(&total.errors),
    );
}
