//! The reference figures: how fast this machine runs AES-256-GCM through the same library as the
//! formats (AWS-LC through `aws-lc-rs`, its AES-NI, VAES and AVX-512 code chosen at run time), how
//! close the segmented format comes to it, and SHA-256, which every upload also costs (both
//! AWS-LC's and RustCrypto's `sha2`, so the server can use the faster). Everything runs on the calling
//! thread and is timed by its own CPU time, so other work on the machine slows the wall clock
//! but not the figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest;
use conclave_crypto::segment::{encrypt, SegmentDecryptor, SegmentEncryptor, DEFAULT_SEGMENT_SIZE};
use conclave_crypto::{Binding, Key};
use conclave_loadgen::measure::thread_cpu_time;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::gb_per_s;

/// The segment size of the format, and the buffer size of the raw reference.
const BUFFER: usize = DEFAULT_SEGMENT_SIZE as usize;
/// Distinct ciphertexts the raw decryption cycles through (1 MiB: they stay in the L2 cache).
const SOURCES: usize = 16;
/// Plaintext handed to the segment writer per call: not a multiple of the segment size, like
/// the pieces an upload arrives in.
const WRITE_PIECE: usize = 100_000;
/// Ciphertext handed to the segment reader per call.
const READ_PIECE: usize = 1 << 20;
/// Size of the object the reader decrypts again and again.
const OBJECT: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Mebibytes processed by each round of each measurement.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Rounds of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One round: bytes processed, this thread's CPU time and the wall-clock time.
struct Round {
    bytes: u64,
    cpu: Duration,
    wall: Duration,
}

impl Round {
    fn per_cpu_second(&self) -> f64 {
        self.bytes as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

fn measure(rounds: usize, mut work: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<Value> {
    let mut done = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let cpu = thread_cpu_time().context("cannot read this thread's CPU time (/proc/thread-self/schedstat)")?;
        let wall = Instant::now();
        let bytes = work()?;
        let wall = wall.elapsed();
        let cpu = thread_cpu_time().context("cannot read this thread's CPU time")? - cpu;
        done.push(Round { bytes, cpu, wall });
    }
    done.sort_by(|a, b| a.per_cpu_second().total_cmp(&b.per_cpu_second()));
    let median = &done[done.len() / 2];
    Ok(json!({
        "bytes": median.bytes,
        "gb_per_cpu_s": gb_per_s(median.bytes, median.cpu.as_secs_f64()),
        "gb_per_s_wall": gb_per_s(median.bytes, median.wall.as_secs_f64()),
        "rounds_gb_per_cpu_s": done.iter().map(|r| gb_per_s(r.bytes, r.cpu.as_secs_f64())).collect::<Vec<_>>(),
    }))
}

pub fn run(args: &Args) -> anyhow::Result<Value> {
    let bytes = args.mib.max(1) << 20;
    let buffers = bytes / BUFFER as u64;
    let key = Key::generate();
    let binding = Binding::document_segment(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 1);
    // The associated data of a segment: the binding and the 16 header bytes.
    let mut aad = binding.to_bytes();
    aad.extend_from_slice(&[0x43; 16]);
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose_secret()).map_err(|_| anyhow!("AES-256-GCM refused the key"))?,
    );
    let plain = text(BUFFER.max(WRITE_PIECE));

    // From one buffer into another, as the segment writer seals from the upload into the object.
    let raw_seal = measure(args.rounds, || {
        let mut buf = vec![0u8; BUFFER];
        let mut tag = [0u8; 16];
        for i in 0..buffers {
            cipher
                .seal_out_of_place_scatter(nonce(i), Aad::from(&aad), &plain[..BUFFER], &mut buf, &[], &mut tag)
                .map_err(|_| anyhow!("AES-GCM refused to seal"))?;
            black_box((&buf, &tag));
        }
        Ok(buffers * BUFFER as u64)
    })?;

    // From one of a few sealed buffers into a working one, as the segment reader opens what it
    // is fed into its output.
    let mut sources = Vec::with_capacity(SOURCES);
    for i in 0..SOURCES as u64 {
        let mut sealed = plain[..BUFFER].to_vec();
        let tag = cipher
            .seal_in_place_separate_tag(nonce(i), Aad::from(&aad), &mut sealed)
            .map_err(|_| anyhow!("AES-GCM refused to seal"))?;
        sources.push((sealed, tag));
    }
    let raw_open = measure(args.rounds, || {
        let mut buf = vec![0u8; BUFFER];
        for i in 0..buffers {
            let (sealed, tag) = &sources[i as usize % SOURCES];
            cipher
                .open_separate_gather(nonce(i % SOURCES as u64), Aad::from(&aad), sealed, tag.as_ref(), &mut buf)
                .map_err(|_| anyhow!("AES-GCM refused its own ciphertext"))?;
            black_box(&buf);
        }
        Ok(buffers * BUFFER as u64)
    })?;

    // Uploads are hashed as well as encrypted (the API returns their SHA-256).
    let sha256_aws_lc = measure(args.rounds, || {
        let mut hasher = digest::Context::new(&digest::SHA256);
        for _ in 0..buffers {
            hasher.update(&plain[..BUFFER]);
        }
        black_box(hasher.finish());
        Ok(buffers * BUFFER as u64)
    })?;
    let sha256_sha2 = measure(args.rounds, || {
        let mut hasher = Sha256::new();
        for _ in 0..buffers {
            hasher.update(&plain[..BUFFER]);
        }
        black_box(hasher.finalize());
        Ok(buffers * BUFFER as u64)
    })?;

    let segment_encrypt = measure(args.rounds, || {
        let piece = &plain[..WRITE_PIECE];
        let pieces = bytes / WRITE_PIECE as u64;
        let mut writer = SegmentEncryptor::new(&key, &binding);
        let mut out = Vec::with_capacity(2 * WRITE_PIECE);
        for _ in 0..pieces {
            writer.push(piece, &mut out)?;
            black_box(&out);
            out.clear();
        }
        writer.finish(&mut out)?;
        Ok(pieces * WRITE_PIECE as u64)
    })?;

    let object = encrypt(&key, &binding, &text(OBJECT), DEFAULT_SEGMENT_SIZE)?;
    let segment_decrypt = measure(args.rounds, || {
        let passes = (bytes / OBJECT as u64).max(1);
        let mut out = Vec::with_capacity(READ_PIECE);
        for _ in 0..passes {
            let mut reader = SegmentDecryptor::new(&key, &binding);
            for piece in object.chunks(READ_PIECE) {
                reader.push(piece, &mut out)?;
                black_box(&out);
                out.clear();
            }
            reader.finish(&mut out)?;
            out.clear();
        }
        Ok(passes * OBJECT as u64)
    })?;

    let ratio = |of: &Value, to: &Value| -> Option<f64> {
        let (of, to) = (of["gb_per_cpu_s"].as_f64()?, to["gb_per_cpu_s"].as_f64()?);
        (to > 0.0).then(|| (of / to * 1000.0).round() / 1000.0)
    };
    Ok(json!({
        "cpu_features": cpu_features(),
        "buffer_bytes": BUFFER,
        "write_piece_bytes": WRITE_PIECE,
        "read_piece_bytes": READ_PIECE,
        "raw_seal": raw_seal,
        "raw_open": raw_open,
        // The one the server hashes uploads with (`conclave-core`): as fast as AWS-LC's here
        // (both SHA-NI), so the crate already used throughout stayed.
        "sha256": sha256_sha2,
        "sha256_library": "RustCrypto sha2",
        "sha256_aws_lc": sha256_aws_lc,
        "sha256_sha2": sha256_sha2,
        "segment_encrypt": segment_encrypt,
        "segment_decrypt": segment_decrypt,
        "segment_encrypt_vs_raw_seal": ratio(&segment_encrypt, &raw_seal),
        "segment_decrypt_vs_raw_open": ratio(&segment_decrypt, &raw_open),
    }))
}

/// A distinct nonce per buffer, as the format uses one per segment.
fn nonce(i: u64) -> Nonce {
    let mut nonce = [0x4e; 12];
    nonce[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// Readable text, like the documents the server takes.
fn text(len: usize) -> Vec<u8> {
    crate::http::TEXT_LINE.iter().copied().cycle().take(len).collect()
}

/// Whether the CPU offers what AWS-LC's AES-GCM and SHA-256 code looks for at run time.
fn cpu_features() -> Value {
    #[cfg(target_arch = "x86_64")]
    {
        json!({
            "aes": std::arch::is_x86_feature_detected!("aes"),
            "pclmulqdq": std::arch::is_x86_feature_detected!("pclmulqdq"),
            "avx2": std::arch::is_x86_feature_detected!("avx2"),
            "avx512f": std::arch::is_x86_feature_detected!("avx512f"),
            "vaes": std::arch::is_x86_feature_detected!("vaes"),
            "vpclmulqdq": std::arch::is_x86_feature_detected!("vpclmulqdq"),
            "sha_ni": std::arch::is_x86_feature_detected!("sha"),
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        json!({ "arch": std::env::consts::ARCH })
    }
}
