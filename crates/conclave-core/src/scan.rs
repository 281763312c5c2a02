//! Malware scanning of uploaded documents before a version becomes readable. The scanner is a
//! separate service (ClamAV's `clamd` in the binary's wiring); the core only asks it about a
//! stream of plaintext and acts on the verdict: clean, the version is recorded; infected, the
//! object is removed and nothing is recorded; no answer, the same (scanning fails closed).

use bytes::Bytes;
use futures::stream::BoxStream;

/// What the scanner says of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The name of what was found (e.g. `Eicar-Test-Signature`).
    Infected(String),
}

/// Why a file could not be scanned (unreachable, timed out, refused the size).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(pub String);

#[async_trait::async_trait]
pub trait Scanner: Send + Sync + 'static {
    /// Scans the plaintext `content`, read to its end unless the scanner stops early.
    async fn scan(&self, content: BoxStream<'static, std::io::Result<Bytes>>) -> Result<Verdict, ScanError>;

    /// How the scanner is named in logs and audit events (no secrets).
    fn describe(&self) -> String;
}

impl std::fmt::Debug for dyn Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
