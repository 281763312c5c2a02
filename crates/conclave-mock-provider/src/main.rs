//! The mock provider as a process, for benchmarks: serves one fixed script until SIGTERM or
//! Ctrl-C, and announces its address on stdout as one JSON line.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use conclave_mock_provider::{MockProvider, Script};

/// A local OpenAI-compatible model provider stand-in.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Content chunks per streamed reply.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Wait before each streamed content chunk, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Length of the reply in bytes (ASCII words); the default is a short greeting.
    #[arg(long)]
    reply_bytes: Option<usize>,
    /// Wait before the response status and headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    response_delay_ms: u64,
    /// Require this key as `Authorization: Bearer <key>` or `api-key: <key>`.
    #[arg(long)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut script = match args.reply_bytes {
        Some(n) => Script::text(filler_text(n)),
        None => Script::default(),
    }
    .with_chunks(args.chunks)
    .with_chunk_delay(Duration::from_millis(args.chunk_delay_ms))
    .with_response_delay(Duration::from_millis(args.response_delay_ms));
    script.api_key = args.api_key;

    // Before announcing: a benchmark may signal as soon as it has read the address.
    let shutdown = shutdown_signal()?;

    // A benchmark sends far more requests than anyone reads back, so none are kept.
    let provider = MockProvider::start_unrecorded(args.listen, script)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;

    // Written by hand to keep the field order; an address has nothing to escape.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, r#"{{"msg":"listening","addr":"{}"}}"#, provider.addr())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);

    shutdown.await;
    provider.stop().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are in place when this returns, not when the
/// future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Nothing can stop the process cleanly then; it serves until killed.
            std::future::pending::<()>().await;
        }
    })
}

/// `len` bytes of space-separated ASCII words, so the reply splits anywhere and its computed
/// usage counts real words.
fn filler_text(len: usize) -> String {
    const WORDS: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod \
                         tempor incididunt ut labore et dolore magna aliqua ";
    WORDS.chars().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_text_has_the_asked_length_in_bytes() {
        for len in [0, 1, 100, 2048] {
            let text = filler_text(len);
            assert_eq!(text.len(), len);
            assert!(text.is_ascii());
        }
    }

    #[test]
    fn arguments_of_the_benchmark_parse() {
        let args = Args::try_parse_from([
            "conclave-mock-provider",
            "--listen",
            "127.0.0.1:0",
            "--chunks",
            "64",
            "--chunk-delay-ms",
            "20",
            "--reply-bytes",
            "2048",
            "--response-delay-ms",
            "5",
            "--api-key",
            "k",
        ])
        .expect("arguments parse");
        assert_eq!(args.chunks, 64);
        assert_eq!(args.chunk_delay_ms, 20);
        assert_eq!(args.reply_bytes, Some(2048));
        assert_eq!(args.api_key.as_deref(), Some("k"));
    }
}
