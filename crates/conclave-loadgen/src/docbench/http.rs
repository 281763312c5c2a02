//! The server figures: a generated text file uploaded as a stream (never held whole, here or in
//! the server), downloaded as a stream and checked, then range reads from its middle; with the
//! server's CPU time over each step and its resident memory sampled during the upload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use conclave_loadgen::measure::{cpu_time, ms, rss_kib, summary};
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::gb_per_s;

/// The line the generated documents repeat: plain UTF-8 text, no NUL, no multipart boundary.
pub const TEXT_LINE: &[u8] =
    b"Privileged and confidential: the quarterly figures, the draft agreement and its annexes.\n";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root URL of the server (`http://127.0.0.1:8080`).
    #[arg(long)]
    pub url: String,
    /// An access token of a user who may create libraries.
    #[arg(long, env = "CONCLAVE_DOCBENCH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The server's process id: its CPU time and resident memory are read from `/proc`.
    #[arg(long)]
    pub server_pid: u32,
    /// Size of the uploaded document in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// The upload body is sent in pieces of this many KiB.
    #[arg(long, default_value_t = 256)]
    pub piece_kib: usize,
    /// Range requests to time.
    #[arg(long, default_value_t = 50)]
    pub ranges: usize,
    /// Length of each range in KiB.
    #[arg(long, default_value_t = 1024)]
    pub range_kib: u64,
    /// How often to sample the server's resident memory during the upload, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub sample_ms: u64,
}

/// The document's content: `size` bytes, a fixed block of text repeated, produced piece by piece
/// as the request body is sent.
struct Content {
    block: Bytes,
    size: u64,
}

impl Content {
    fn new(piece: usize, size: u64) -> Self {
        let block: Vec<u8> = TEXT_LINE.iter().copied().cycle().take(piece.max(1)).collect();
        Self { block: Bytes::from(block), size }
    }

    /// The pieces of the content, in order; clones of one buffer, so nothing is held twice.
    fn pieces(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let (block, size) = (self.block.clone(), self.size);
        let piece = block.len() as u64;
        (0..size.div_ceil(piece)).map(move |i| block.slice(..(size - i * piece).min(piece) as usize))
    }

    /// Whether `data` is the content at `offset`.
    fn matches(&self, mut offset: u64, mut data: &[u8]) -> bool {
        let piece = self.block.len() as u64;
        while !data.is_empty() {
            let at = (offset % piece) as usize;
            let take = (self.block.len() - at).min(data.len());
            if data[..take] != self.block[at..at + take] {
                return false;
            }
            data = &data[take..];
            offset += take as u64;
        }
        true
    }
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().build().context("cannot build the HTTP client")?;
    let url = args.url.trim_end_matches('/').to_owned();
    let pid = args.server_pid.to_string();
    ensure!(cpu_time(&pid).is_some(), "no process {pid} to measure");
    let size = args.size_mib << 20;
    let content = Content::new(args.piece_kib.max(1) << 10, size);
    let client_before = cpu_time("self");

    let library = client
        .post(format!("{url}/api/v1/libraries"))
        .bearer_auth(&args.token)
        .json(&json!({"name": format!("docbench {}", uuid::Uuid::new_v4())}))
        .send()
        .await
        .context("creating a library")?;
    let library = created(library).await.context("creating a library")?;
    let library = library["id"].as_str().context("the library has no id")?.to_owned();

    let (document, upload) = upload(&client, &url, &args, &pid, &library, &content).await?;
    let download = download(&client, &url, &args.token, &pid, &document, &content).await?;
    let ranges = ranges(&client, &url, &args, &pid, &document, &content).await?;
    let client_cpu = cpu_time("self").zip(client_before).map(|(after, before)| after - before);
    Ok(json!({
        "size_bytes": size,
        "upload": upload,
        "download": download,
        "ranges": ranges,
        "client_cpu_s": client_cpu.map(|d| ms(d) / 1e3),
    }))
}

/// The JSON of a 201 answer.
async fn created(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    if status != StatusCode::CREATED {
        bail!("{status}: {}", text.chars().take(500).collect::<String>());
    }
    Ok(serde_json::from_str(&text)?)
}

/// The server's CPU time and the wall-clock time from now.
struct Clock {
    pid: String,
    cpu: Duration,
    wall: Instant,
}

impl Clock {
    fn start(pid: &str) -> anyhow::Result<Self> {
        let cpu = cpu_time(pid).context("the server has gone")?;
        Ok(Self { pid: pid.to_owned(), cpu, wall: Instant::now() })
    }

    /// Throughput of `bytes` on the wall clock and per CPU second of the server.
    fn figures(&self, bytes: u64) -> anyhow::Result<Value> {
        let wall = self.wall.elapsed();
        let cpu = cpu_time(&self.pid).context("the server has gone")? - self.cpu;
        Ok(json!({
            "wall_s": ms(wall) / 1e3,
            "gb_per_s_wall": gb_per_s(bytes, wall.as_secs_f64()),
            "server_cpu_s": ms(cpu) / 1e3,
            "gb_per_server_cpu_s": gb_per_s(bytes, cpu.as_secs_f64()),
        }))
    }
}

async fn upload(
    client: &reqwest::Client,
    url: &str,
    args: &Args,
    pid: &str,
    library: &str,
    content: &Content,
) -> anyhow::Result<(String, Value)> {
    let boundary = format!("conclave-docbench-{}", uuid::Uuid::new_v4().simple());
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let length = head.len() as u64 + content.size + tail.len() as u64;
    let body = futures::stream::iter(
        std::iter::once(head).chain(content.pieces()).chain(std::iter::once(tail)).map(Ok::<_, std::io::Error>),
    );

    let rss_before = rss_kib(pid).context("cannot read the server's VmRSS")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(pid.to_owned(), Duration::from_millis(args.sample_ms), stop.clone()));
    let clock = Clock::start(pid)?;
    let response = client
        .post(format!("{url}/api/v1/libraries/{library}/documents"))
        .bearer_auth(&args.token)
        .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .header(CONTENT_LENGTH, length)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .context("uploading")?;
    let document = created(response).await.context("uploading")?;
    let mut figures = clock.figures(content.size)?;
    stop.store(true, Ordering::Relaxed);
    let (rss_peak, samples) = sampler.await.context("the memory sampler failed")?;
    ensure!(
        document["size"].as_u64() == Some(content.size),
        "the server stored {} bytes, not {}",
        document["size"],
        content.size
    );
    let rss_after = rss_kib(pid);
    figures["rss_before_kib"] = json!(rss_before);
    figures["rss_peak_kib"] = json!(rss_peak);
    figures["rss_after_kib"] = json!(rss_after);
    figures["rss_growth_mb"] = json!((rss_peak.saturating_sub(rss_before) as f64 * 1.024).round() / 1e3);
    figures["rss_samples"] = json!(samples);
    let id = document["id"].as_str().context("the document has no id")?.to_owned();
    Ok((id, figures))
}

/// The highest resident memory seen until `stop` is set, and how many samples it took.
async fn sample_rss(pid: String, every: Duration, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut peak, mut samples) = (0, 0);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        if let Some(rss) = rss_kib(&pid) {
            peak = peak.max(rss);
            samples += 1;
        }
    }
    (peak, samples)
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    pid: &str,
    document: &str,
    content: &Content,
) -> anyhow::Result<Value> {
    let clock = Clock::start(pid)?;
    let response = client
        .get(format!("{url}/api/v1/documents/{document}/content"))
        .bearer_auth(token)
        .send()
        .await
        .context("downloading")?;
    ensure!(response.status() == StatusCode::OK, "downloading: {}", response.status());
    let mut first_byte = None;
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("downloading")?;
        first_byte.get_or_insert_with(|| clock.wall.elapsed());
        ensure!(content.matches(received, &chunk), "the download differs from the upload at byte {received}");
        received += chunk.len() as u64;
    }
    ensure!(received == content.size, "downloaded {received} bytes of {}", content.size);
    let mut figures = clock.figures(received)?;
    figures["first_byte_ms"] = json!(first_byte.map(ms));
    Ok(figures)
}

async fn ranges(
    client: &reqwest::Client,
    url: &str,
    args: &Args,
    pid: &str,
    document: &str,
    content: &Content,
) -> anyhow::Result<Value> {
    let len = (args.range_kib << 10).min(content.size);
    // From the middle, not on a segment boundary: the range touches one segment more.
    let start = (content.size / 2 + 1000).min(content.size - len);
    let header = format!("bytes={start}-{}", start + len - 1);
    let target = format!("{url}/api/v1/documents/{document}/content");
    let clock = Clock::start(pid)?;
    let mut times = Vec::with_capacity(args.ranges);
    for _ in 0..args.ranges {
        let started = Instant::now();
        let response =
            client.get(&target).bearer_auth(&args.token).header(RANGE, &header).send().await.context("range read")?;
        ensure!(response.status() == StatusCode::PARTIAL_CONTENT, "range read: {}", response.status());
        let body = response.bytes().await.context("range read")?;
        times.push(started.elapsed());
        ensure!(body.len() as u64 == len, "range read: {} bytes, not {len}", body.len());
        ensure!(content.matches(start, &body), "range read: the bytes differ from the upload");
    }
    let cpu = cpu_time(pid).context("the server has gone")? - clock.cpu;
    Ok(json!({
        "count": args.ranges,
        "range": header,
        "ms": summary(times),
        "server_cpu_ms_per_request": ms(cpu) / args.ranges as f64,
    }))
}
