//! `conclave-loadgen`: runs many streamed replies at once against Conclave (the OpenAI-compatible
//! gateway or the conversation API) or straight against the model provider, and prints one JSON
//! object: time to first token and total time per stream, errors, and, given its pid, the
//! server's CPU time and resident memory over the run. `bench/stream.py` drives it.

mod sse;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use conclave_loadgen::measure::{cpu_time, ms, rss_kib, summary};
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use crate::sse::{Kind, Protocol, Scanner};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Conclave's `POST /v1/chat/completions`, streamed, with usage.
    Gateway,
    /// The same request straight to the model provider: the baseline.
    Direct,
    /// Conclave's `POST /api/v1/conversations/{id}/messages` with `stream: true` (stored).
    Conversation,
}

/// Streams chat replies from many clients at once and reports how long they took.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Root URL of the server (`http://127.0.0.1:8080`); `/v1/chat/completions` or
    /// `/api/v1/...` are appended.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Bearer credential: a Conclave API key (gateway), an access token or API key
    /// (conversation), the provider's key if it wants one (direct).
    #[arg(long, visible_alias = "api-key", env = "CONCLAVE_LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Streams to run in all.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Streams open at once: each of this many clients runs its streams one after the other.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value = "mock-model")]
    model: String,
    /// The user message of every request.
    #[arg(long, default_value = "Say something about the sea.")]
    prompt: String,
    /// Conversation mode: messages per conversation before a client takes a fresh one. The
    /// agent and conversations are created before the run, outside the figures.
    #[arg(long, default_value_t = 1)]
    turns: usize,
    /// Spread the clients' first requests over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp_s: f64,
    /// Give up on a stream after this many seconds (counted as an error).
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Start no stream after this many seconds from the start of the run.
    #[arg(long, default_value_t = 600)]
    deadline_s: u64,
    /// Report this process's CPU time and resident memory over the run (Linux `/proc`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// How often to sample the server's resident memory, in milliseconds.
    #[arg(long, default_value_t = 50)]
    sample_ms: u64,
    /// Runtime worker threads of the load client itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.streams == 0 || args.concurrency == 0 || args.turns == 0 {
        bail!("--streams, --concurrency and --turns must be at least 1");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .context("cannot start the runtime")?;
    let report = runtime.block_on(run(args))?;
    println!("{report}");
    Ok(())
}

/// What every client shares.
struct Plan {
    client: reqwest::Client,
    mode: Mode,
    url: String,
    token: Option<String>,
    body: Vec<u8>,
    streams: usize,
    turns: usize,
    timeout: Duration,
    deadline: Instant,
    next_stream: AtomicUsize,
    conversations: Vec<String>,
    next_conversation: AtomicUsize,
    open: AtomicUsize,
    open_max: AtomicUsize,
}

/// One stream's outcome.
#[derive(Default)]
struct Record {
    ttft: Option<Duration>,
    total: Duration,
    chunks: u64,
    bytes: u64,
    usage: bool,
    error: Option<(String, String)>,
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let url = args.url.trim_end_matches('/').to_owned();
    let conversations = match args.mode {
        Mode::Conversation => {
            let needed = args.streams.div_ceil(args.turns) + if args.turns > 1 { args.concurrency } else { 0 };
            create_conversations(&client, &url, args.token.as_deref(), &args.model, needed.min(args.streams)).await?
        }
        Mode::Gateway | Mode::Direct => Vec::new(),
    };
    let body = match args.mode {
        Mode::Conversation => json!({"content": args.prompt, "stream": true}),
        Mode::Gateway | Mode::Direct => json!({
            "model": args.model,
            "messages": [{"role": "user", "content": args.prompt}],
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
    };
    let pid = args.server_pid.map(|p| p.to_string());
    let server_before = pid.as_deref().and_then(cpu_time);
    let rss_idle = pid.as_deref().and_then(rss_kib);
    let client_before = cpu_time("self");
    let started = Instant::now();
    let plan = Arc::new(Plan {
        client,
        mode: args.mode,
        url,
        token: args.token,
        body: serde_json::to_vec(&body)?,
        streams: args.streams,
        turns: args.turns,
        timeout: Duration::from_secs(args.timeout_s),
        deadline: started + Duration::from_secs(args.deadline_s),
        next_stream: AtomicUsize::new(0),
        conversations,
        next_conversation: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        open_max: AtomicUsize::new(0),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let sampler =
        pid.clone().map(|pid| tokio::spawn(sample_rss(pid, Duration::from_millis(args.sample_ms), stop.clone())));
    let clients = args.concurrency.min(args.streams);
    let ramp = Duration::from_secs_f64(args.ramp_s.max(0.0));
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let plan = plan.clone();
            let delay = ramp.mul_f64(i as f64 / clients as f64);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                client_loop(&plan).await
            })
        })
        .collect();
    let mut records = Vec::with_capacity(args.streams);
    for worker in workers {
        records.extend(worker.await.context("a client task failed")?);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rss_peak = match sampler {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let client_cpu = cpu_time("self").zip(client_before).map(|(after, before)| after - before);
    let server = pid.map(|pid| Server {
        cpu: cpu_time(&pid).zip(server_before).map(|(after, before)| after - before),
        rss_idle,
        rss_peak,
        rss_end: rss_kib(&pid),
        pid,
    });
    Ok(report(&plan, &records, elapsed, client_cpu, server))
}

/// The measured server's figures over the run.
struct Server {
    pid: String,
    cpu: Option<Duration>,
    rss_idle: Option<u64>,
    rss_peak: Option<u64>,
    rss_end: Option<u64>,
}

/// The agent and `count` conversations with it, created a few at a time.
async fn create_conversations(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    model: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let agent = json!({"name": "loadgen", "model": model, "instructions": "You are a load test."});
    let agent_id =
        create(client, &format!("{url}/api/v1/agents"), token, &agent).await.context("creating the agent")?;
    let conversation = json!({"agent_id": agent_id});
    let conversations_url = format!("{url}/api/v1/conversations");
    futures::stream::iter(0..count)
        .map(|_| create(client, &conversations_url, token, &conversation))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("creating the conversations")
}

/// POSTs `body` and returns the `id` of what was created.
async fn create(client: &reqwest::Client, url: &str, token: Option<&str>, body: &Value) -> anyhow::Result<String> {
    let mut request = client.post(url).json(body).timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.with_context(|| format!("POST {url}: {status}, not JSON"))?;
    match answer.get("id").and_then(Value::as_str) {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => bail!("POST {url}: {status} {answer}"),
    }
}

/// One client: streams one after the other until none are left or the deadline has passed.
async fn client_loop(plan: &Plan) -> Vec<Record> {
    let mut records = Vec::new();
    let mut conversation: Option<(usize, usize)> = None;
    while Instant::now() < plan.deadline {
        if plan.next_stream.fetch_add(1, Ordering::Relaxed) >= plan.streams {
            break;
        }
        let url = match plan.mode {
            Mode::Gateway | Mode::Direct => format!("{}/v1/chat/completions", plan.url),
            Mode::Conversation => {
                let (index, used) = match conversation {
                    Some((index, used)) if used < plan.turns => (index, used),
                    _ => (plan.next_conversation.fetch_add(1, Ordering::Relaxed), 0),
                };
                conversation = Some((index, used + 1));
                let Some(id) = plan.conversations.get(index) else {
                    records.push(Record::failed("setup", "more streams than conversations".into()));
                    continue;
                };
                format!("{}/api/v1/conversations/{id}/messages", plan.url)
            }
        };
        let started = Instant::now();
        let record = match tokio::time::timeout(plan.timeout, one_stream(plan, &url, started)).await {
            Ok(record) => record,
            Err(_) => Record { total: started.elapsed(), ..Record::failed("timeout", String::new()) },
        };
        records.push(record);
    }
    records
}

impl Record {
    fn failed(kind: &str, detail: String) -> Record {
        Record { error: Some((kind.to_owned(), detail)), ..Record::default() }
    }
}

/// Counts a stream as open from its response headers until it ends, however it ends.
struct OpenStream<'a>(&'a AtomicUsize);

impl<'a> OpenStream<'a> {
    fn new(plan: &'a Plan) -> OpenStream<'a> {
        let now = plan.open.fetch_add(1, Ordering::Relaxed) + 1;
        plan.open_max.fetch_max(now, Ordering::Relaxed);
        OpenStream(&plan.open)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn one_stream(plan: &Plan, url: &str, started: Instant) -> Record {
    let mut request = plan.client.post(url).header(CONTENT_TYPE, "application/json").body(plan.body.clone());
    if let Some(token) = &plan.token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Record::failed("transport", e.to_string()),
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Record::failed(&format!("http_{}", status.as_u16()), text.chars().take(300).collect());
    }
    let _open = OpenStream::new(plan);
    let protocol = match plan.mode {
        Mode::Gateway | Mode::Direct => Protocol::OpenAi,
        Mode::Conversation => Protocol::Conversation,
    };
    let mut scanner = Scanner::new(protocol);
    let mut record = Record::default();
    let mut done = false;
    let mut body = response.bytes_stream();
    while let Some(read) = body.next().await {
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                record.error = Some(("transport".into(), e.to_string()));
                break;
            }
        };
        record.bytes += bytes.len() as u64;
        scanner.feed(&bytes, |kind, data| {
            record.chunks += 1;
            match kind {
                Kind::Content if record.ttft.is_none() => record.ttft = Some(started.elapsed()),
                Kind::Usage => record.usage = true,
                Kind::Done => done = true,
                Kind::Error if record.error.is_none() => {
                    let detail = String::from_utf8_lossy(data).chars().take(300).collect();
                    record.error = Some(("error_event".into(), detail));
                }
                Kind::Content | Kind::Error | Kind::Other => {}
            }
        });
    }
    record.total = started.elapsed();
    if record.error.is_none() && !done {
        record.error = Some(("incomplete".into(), "the stream ended without its last event".into()));
    }
    if record.error.is_none() && record.ttft.is_none() {
        record.error = Some(("no_content".into(), "the reply had no text".into()));
    }
    record
}

/// The highest resident memory seen until `stop` is set.
async fn sample_rss(pid: String, every: Duration, stop: Arc<AtomicBool>) -> Option<u64> {
    let mut peak = rss_kib(&pid);
    let mut ticks = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        peak = peak.max(rss_kib(&pid));
    }
    peak
}

fn report(
    plan: &Plan,
    records: &[Record],
    elapsed: Duration,
    client_cpu: Option<Duration>,
    server: Option<Server>,
) -> Value {
    let ok: Vec<&Record> = records.iter().filter(|r| r.error.is_none()).collect();
    // The count of each kind of error, and the first one's detail.
    let mut error_kinds = BTreeMap::<&str, usize>::new();
    let mut error_samples = BTreeMap::<&str, &str>::new();
    for (kind, detail) in records.iter().filter_map(|r| r.error.as_ref()) {
        *error_kinds.entry(kind).or_default() += 1;
        error_samples.entry(kind).or_insert(detail);
    }
    let attempted = records.len().max(1) as f64;
    let per_stream = |d: Duration| (d.as_secs_f64() * 1e6 / attempted).round() / 1e3;
    let server = server.map(|s| {
        json!({
            "pid": s.pid,
            "cpu_ms": s.cpu.map(ms),
            "cpu_ms_per_stream": s.cpu.map(per_stream),
            "rss_idle_kib": s.rss_idle,
            "rss_peak_kib": s.rss_peak,
            "rss_end_kib": s.rss_end,
        })
    });
    json!({
        "mode": format!("{:?}", plan.mode).to_lowercase(),
        "streams": plan.streams,
        "attempted": records.len(),
        "completed": ok.len(),
        "errors": records.len() - ok.len(),
        "error_kinds": error_kinds,
        "error_samples": error_samples,
        "elapsed_s": (elapsed.as_secs_f64() * 1e3).round() / 1e3,
        "streams_per_s": ((ok.len() as f64 / elapsed.as_secs_f64()) * 10.0).round() / 10.0,
        "ttft_ms": summary(ok.iter().filter_map(|r| r.ttft).collect()),
        "total_ms": summary(ok.iter().map(|r| r.total).collect()),
        "chunks": records.iter().map(|r| r.chunks).sum::<u64>(),
        "bytes": records.iter().map(|r| r.bytes).sum::<u64>(),
        "usage_chunks": records.iter().filter(|r| r.usage).count(),
        "open_max": plan.open_max.load(Ordering::Relaxed),
        "client_cpu_ms": client_cpu.map(ms),
        "server": server,
    })
}
