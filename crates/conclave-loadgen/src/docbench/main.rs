//! `conclave-docbench`: the figures of issue 5's performance targets for documents, printed as
//! one JSON object. `crypto` measures raw AES-256-GCM (the `aes-gcm` crate the formats use),
//! SHA-256 (uploads are hashed too) and the segmented format in memory, on one core; `http`
//! uploads a generated file to a running server as a stream, downloads it, and times range reads,
//! reading the server's CPU time and resident memory from `/proc`. `bench/documents.py` drives
//! both.

mod crypto;
mod http;

use anyhow::bail;
use clap::{Parser, Subcommand};

/// Document benchmarks: AES-GCM and the segmented format in memory, or uploads, downloads and
/// range reads against a running server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raw AES-256-GCM and SHA-256 on 64 KiB buffers, then the segmented format
    /// (SegmentEncryptor, SegmentDecryptor) in memory, all on this thread; throughput per CPU
    /// second of it.
    Crypto(crypto::Args),
    /// Upload a generated text file as a stream, download it, and time range reads from its
    /// middle, against a running server.
    Http(http::Args),
}

fn main() -> anyhow::Result<()> {
    let report = match Args::parse().command {
        Command::Crypto(args) => crypto::run(&args)?,
        Command::Http(args) => {
            if args.size_mib == 0 || args.ranges == 0 || args.range_kib == 0 {
                bail!("--size-mib, --ranges and --range-kib must be at least 1");
            }
            // One thread: the client shares the cores with the server it measures.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(http::run(args))?
        }
    };
    println!("{report}");
    Ok(())
}

/// Gigabytes (10^9 bytes) per second, three decimals.
fn gb_per_s(bytes: u64, seconds: f64) -> Option<f64> {
    (seconds > 0.0).then(|| (bytes as f64 / seconds / 1e6).round() / 1e3)
}
