//! Signed audit checkpoints: their JSON form, the append-only sinks they go to, the periodic
//! writer, and the verification of a tenant's log against them (shared by the API's verify and
//! the offline `conclave audit verify`).
//!
//! A checkpoint is the head of a tenant's hash chain (sequence number and hash) signed with a key
//! the database does not hold. The chain alone shows an edited, removed, inserted or reordered
//! event; a checkpoint kept outside the database also shows the newest events removed (with the
//! tenant's counter reset) and a chain rewritten from some point with recomputed hashes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use conclave_crypto::CheckpointSigner;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::records::{hex, AuditCheckpoint, SignatureAlgorithm};
use crate::store::{AuditFilter, Store};

/// The `format` field of every checkpoint line.
pub const FORMAT: &str = "conclave-audit-checkpoint";

/// A checkpoint as written to a sink: one JSON object (one line of a JSON Lines file, or one
/// object in a container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDocument {
    /// Always `conclave-audit-checkpoint`.
    pub format: String,
    /// Format version of the signed bytes (1).
    pub version: u32,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub seq: i64,
    /// Hash of event `seq` (hex).
    pub head: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub key_id: String,
    /// `Ed25519` or `ES256`.
    #[schema(value_type = String)]
    pub algorithm: SignatureAlgorithm,
    /// Standard base64 (Ed25519: 64 bytes; ES256: 64 bytes `r || s`).
    pub signature: String,
}

impl From<&AuditCheckpoint> for CheckpointDocument {
    fn from(c: &AuditCheckpoint) -> Self {
        CheckpointDocument {
            format: FORMAT.to_owned(),
            version: c.version,
            tenant_id: c.tenant_id,
            seq: c.seq,
            head: hex(&c.head),
            at: c.at,
            key_id: c.key_id.clone(),
            algorithm: c.algorithm,
            signature: BASE64.encode(&c.signature),
        }
    }
}

impl TryFrom<CheckpointDocument> for AuditCheckpoint {
    type Error = String;

    fn try_from(d: CheckpointDocument) -> std::result::Result<Self, String> {
        if d.format != FORMAT {
            return Err(format!("format is '{}', not '{FORMAT}'", d.format));
        }
        if d.version != AuditCheckpoint::VERSION {
            return Err(format!("unsupported checkpoint version {}", d.version));
        }
        let head = unhex(&d.head).filter(|h| h.len() == 32).ok_or("head is not 64 hex digits")?;
        let signature = BASE64.decode(&d.signature).map_err(|_| "signature is not base64")?;
        Ok(AuditCheckpoint {
            version: d.version,
            tenant_id: d.tenant_id,
            seq: d.seq,
            head,
            at: d.at,
            key_id: d.key_id,
            algorithm: d.algorithm,
            signature,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// Where checkpoints go, besides the database: somewhere the database's writers cannot rewrite.
#[async_trait]
pub trait CheckpointSink: Send + Sync {
    /// For logs and reports: the folder or container.
    fn describe(&self) -> String;
    /// Appends one checkpoint; never replaces an earlier one.
    async fn append(&self, checkpoint: &AuditCheckpoint) -> Result<()>;
}

/// One JSON Lines file per tenant (`<tenant id>.jsonl`) in a folder: opened for appending only,
/// each line synced to disk before the checkpoint counts as written, never rewritten.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink { dir: dir.into() }
    }

    pub fn file_for(dir: &Path, tenant: TenantId) -> PathBuf {
        dir.join(format!("{}.jsonl", tenant.0.hyphenated()))
    }
}

#[async_trait]
impl CheckpointSink for FileSink {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    async fn append(&self, checkpoint: &AuditCheckpoint) -> Result<()> {
        use std::io::Write as _;
        let mut line = serde_json::to_vec(&CheckpointDocument::from(checkpoint)).map_err(Error::internal)?;
        line.push(b'\n');
        let path = Self::file_for(&self.dir, checkpoint.tenant_id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut folder = std::fs::DirBuilder::new();
            folder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
            folder.create(&dir)?;
            let mut options = std::fs::OpenOptions::new();
            options.append(true).create(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path)?;
            // One write of a whole line: appends from two processes never interleave inside a line.
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| Error::Unavailable { service: "audit checkpoint folder", detail: e.to_string() })
    }
}

/// A checkpoint read back from a sink, with where it came from (for reports).
#[derive(Debug, Clone)]
pub struct SourcedCheckpoint {
    /// `file:line`, an object name, or `database`.
    pub source: String,
    /// The checkpoint, or why its line could not be read (reported as a bad checkpoint).
    pub checkpoint: std::result::Result<AuditCheckpoint, String>,
}

/// Parses checkpoint JSON Lines; every line is returned, unreadable ones as errors.
pub fn parse_lines(source: &str, text: &str) -> Vec<SourcedCheckpoint> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| SourcedCheckpoint {
            source: format!("{source}:{}", i + 1),
            checkpoint: serde_json::from_str::<CheckpointDocument>(l)
                .map_err(|e| format!("not a checkpoint: {e}"))
                .and_then(AuditCheckpoint::try_from),
        })
        .collect()
}

/// Every checkpoint in a folder written by [`FileSink`] (all tenants).
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<SourcedCheckpoint>> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        out.extend(parse_lines(&path.display().to_string(), &text));
    }
    Ok(out)
}

/// Signs and writes checkpoints: the signer, the sinks, and how often.
pub struct Checkpointer {
    pub signer: Arc<dyn CheckpointSigner>,
    pub sinks: Vec<Arc<dyn CheckpointSink>>,
    pub every: Duration,
    /// The newest checkpointed sequence number seen per tenant, so a tenant whose log has not
    /// moved costs no database read.
    checkpointed: std::sync::Mutex<HashMap<TenantId, i64>>,
}

impl Checkpointer {
    pub fn new(signer: Arc<dyn CheckpointSigner>, sinks: Vec<Arc<dyn CheckpointSink>>, every: Duration) -> Self {
        Self { signer, sinks, every, checkpointed: Default::default() }
    }

    /// Signs the tenant's head as of now.
    pub async fn sign(&self, tenant: TenantId, seq: i64, head: Vec<u8>) -> Result<AuditCheckpoint> {
        let mut checkpoint = AuditCheckpoint {
            version: AuditCheckpoint::VERSION,
            tenant_id: tenant,
            seq,
            head,
            at: crate::clock::truncate_micros(crate::clock::now()),
            key_id: self.signer.key_id(),
            algorithm: self.signer.algorithm(),
            signature: Vec::new(),
        };
        checkpoint.signature = self.signer.sign(&checkpoint.signed_bytes()).await.map_err(crypto_unavailable)?;
        Ok(checkpoint)
    }

    /// Writes a checkpoint for every tenant whose log moved since its last one: to every sink
    /// first, then to the database (so a checkpoint in the database was also written outside it;
    /// a failed sink is retried on the next round). Returns how many were written.
    ///
    /// One tenant's failure does not hold the others back: every tenant is tried, and the first
    /// error is returned after the round.
    pub async fn run_once(&self, store: &dyn Store) -> Result<usize> {
        let mut written = 0;
        let mut first_error = None;
        for (tenant, seq, head) in store.audit_heads().await? {
            let Some(head) = head.filter(|_| seq > 0) else { continue };
            match self.checkpoint_tenant(store, tenant, seq, head).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "an audit checkpoint could not be written; retried next round");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(written), Err)
    }

    /// Checkpoints the tenant at `seq` unless a checkpoint already covers it: known in memory,
    /// else read from the database (another replica may have written it).
    async fn checkpoint_tenant(&self, store: &dyn Store, tenant: TenantId, seq: i64, head: Vec<u8>) -> Result<bool> {
        if self.known(tenant).is_some_and(|known| known >= seq) {
            return Ok(false);
        }
        if let Some(latest) = store.latest_checkpoint(tenant).await? {
            self.remember(tenant, latest.seq);
            if latest.seq >= seq {
                return Ok(false);
            }
        }
        let checkpoint = self.sign(tenant, seq, head).await?;
        for sink in &self.sinks {
            sink.append(&checkpoint).await?;
        }
        store.append_checkpoint(&checkpoint).await?;
        self.remember(tenant, seq);
        Ok(true)
    }

    fn known(&self, tenant: TenantId) -> Option<i64> {
        self.checkpointed.lock().unwrap_or_else(|e| e.into_inner()).get(&tenant).copied()
    }

    fn remember(&self, tenant: TenantId, seq: i64) {
        let mut map = self.checkpointed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(tenant).or_insert(seq);
        *entry = (*entry).max(seq);
    }
}

fn crypto_unavailable(e: conclave_crypto::CryptoError) -> Error {
    Error::Unavailable { service: "checkpoint signing key", detail: e.to_string() }
}

/// What is wrong with one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointProblem {
    /// Where the checkpoint was read: `database`, `file:line` or an object name.
    pub source: String,
    /// The sequence number it names (absent when it could not be read at all).
    pub seq: Option<i64>,
    pub reason: String,
}

/// The result of checking a tenant's log: the hash chain, and the checkpoints against it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditVerification {
    /// True when every event is in place and unchanged and every checkpoint is genuine and
    /// agrees with the log.
    pub ok: bool,
    /// Events checked.
    pub events: i64,
    /// Hash of the newest event checked (hex).
    pub head: Option<String>,
    /// The first sequence number that is missing, out of place or altered (for a log rewritten
    /// behind a checkpoint: the first event after the last checkpoint that still agrees).
    pub first_bad_seq: Option<i64>,
    /// Checkpoints whose signature verified and which agree with the log.
    pub checkpoints: i64,
    /// The newest such checkpoint's sequence number.
    pub checkpoint_seq: Option<i64>,
    /// The first forged, unreadable or contradicted checkpoint.
    pub bad_checkpoint: Option<CheckpointProblem>,
}

/// Checks the tenant's log: recomputes the hash chain from the first event, checks each
/// checkpoint's signature with `trusted_keys` (DER SPKI; never a key read from the database or
/// from the checkpoint), and each genuine checkpoint against the log. `progress` is told how
/// many events were checked so far.
pub async fn verify_log(
    store: &dyn Store,
    tenant: TenantId,
    checkpoints: Vec<SourcedCheckpoint>,
    trusted_keys: &[Vec<u8>],
    progress: &(dyn Fn(i64) + Send + Sync),
) -> Result<AuditVerification> {
    const PAGE: u32 = 1000;
    let mut bad_checkpoint: Option<CheckpointProblem> = None;
    let mut note = |p: CheckpointProblem| {
        // Keep the one with the lowest sequence number (unreadable lines first).
        if bad_checkpoint.as_ref().is_none_or(|b| p.seq.unwrap_or(i64::MIN) < b.seq.unwrap_or(i64::MIN)) {
            bad_checkpoint = Some(p);
        }
    };
    // Genuine checkpoints by sequence number.
    let mut genuine: BTreeMap<i64, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for sourced in checkpoints {
        let c = match sourced.checkpoint {
            Ok(c) => c,
            Err(reason) => {
                note(CheckpointProblem { source: sourced.source, seq: None, reason });
                continue;
            }
        };
        if c.tenant_id != tenant {
            continue;
        }
        let signed = c.signed_bytes();
        let verified =
            trusted_keys.iter().any(|key| conclave_crypto::verify_signature(key, &signed, &c.signature).is_ok());
        if !verified {
            note(CheckpointProblem {
                source: sourced.source,
                seq: Some(c.seq),
                reason: "the signature does not verify with the trusted public key: forged or altered".into(),
            });
            continue;
        }
        genuine.entry(c.seq).or_default().push((sourced.source, c.head));
    }

    let (last_seq, stored_head) = store.audit_head(tenant).await?;
    let mut prev = [0u8; 32];
    let mut expected = 1i64;
    let mut agreed: Option<i64> = None;
    let mut agreeing = 0i64;
    let mut first_bad_seq = None;
    'walk: loop {
        let page = store.list_audit(tenant, &AuditFilter::after(expected - 1, PAGE)).await?;
        let n = page.len();
        for e in page {
            if e.seq != expected {
                first_bad_seq = Some(expected);
                break 'walk;
            }
            let h = crate::records::audit_hash(&prev, &e);
            if e.hash.as_deref() != Some(&h[..]) {
                first_bad_seq = Some(e.seq);
                break 'walk;
            }
            if let Some(vouched) = genuine.remove(&e.seq) {
                for (source, head) in vouched {
                    if head[..] == h[..] {
                        agreeing += 1;
                        agreed = Some(e.seq);
                    } else {
                        first_bad_seq.get_or_insert(agreed.map_or(1, |s| s + 1));
                        note(CheckpointProblem {
                            source,
                            seq: Some(e.seq),
                            reason: format!(
                                "the log's hash at event {} differs from the signed checkpoint: events up to it were rewritten",
                                e.seq
                            ),
                        });
                    }
                }
                if first_bad_seq.is_some() {
                    break 'walk;
                }
            }
            prev = h;
            expected += 1;
        }
        progress(expected - 1);
        if n < PAGE as usize {
            break;
        }
    }
    let checked = expected - 1;
    if first_bad_seq.is_none() {
        // Checkpoints beyond the end: the newest events were removed.
        if let Some((seq, vouched)) = genuine.range(checked + 1..).next() {
            first_bad_seq = Some(checked + 1);
            note(CheckpointProblem {
                source: vouched[0].0.clone(),
                seq: Some(*seq),
                reason: format!(
                    "a signed checkpoint names event {seq}, but the log ends at event {checked}: newest events removed"
                ),
            });
        } else if checked != last_seq || (checked > 0 && stored_head.as_deref() != Some(&prev[..])) {
            // The tenant's counter and head remember removed newest events.
            first_bad_seq = Some(checked + 1);
        }
    }
    let ok = first_bad_seq.is_none() && bad_checkpoint.is_none();
    Ok(AuditVerification {
        ok,
        events: checked,
        head: (checked > 0).then(|| hex(&prev)),
        first_bad_seq,
        checkpoints: agreeing,
        checkpoint_seq: agreed,
        bad_checkpoint,
    })
}

/// All of the tenant's checkpoints recorded in the database.
pub async fn database_checkpoints(store: &dyn Store, tenant: TenantId) -> Result<Vec<SourcedCheckpoint>> {
    const PAGE: u32 = 1000;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_checkpoints(tenant, after, PAGE).await?;
        let n = page.len();
        if let Some(last) = page.last() {
            after = last.seq;
        }
        out.extend(page.into_iter().map(|c| SourcedCheckpoint { source: "database".into(), checkpoint: Ok(c) }));
        if n < PAGE as usize {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditCheckpoint {
        AuditCheckpoint {
            version: 1,
            tenant_id: TenantId(uuid::Uuid::nil()),
            seq: 42,
            head: vec![0xab; 32],
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            key_id: "local-ed25519:k".into(),
            algorithm: SignatureAlgorithm::Ed25519,
            signature: vec![1; 64],
        }
    }

    #[test]
    fn signed_bytes_are_the_documented_text() {
        let text = String::from_utf8(sample().signed_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "conclave-audit-checkpoint\nversion=1\ntenant=00000000-0000-0000-0000-000000000000\nseq=42\nhead={}\nat=1700000000000000\nkey_id=local-ed25519:k\nalgorithm=Ed25519\n",
                "ab".repeat(32)
            )
        );
        let mut other = sample();
        other.key_id = "local-ed25519:k\nseq=1".into();
        assert_ne!(other.signed_bytes(), sample().signed_bytes());
    }

    #[test]
    fn documents_round_trip_and_bad_lines_are_reported() {
        let line = serde_json::to_string(&CheckpointDocument::from(&sample())).unwrap();
        let parsed = parse_lines("f", &format!("{line}\n\n{{\"format\":1}}\n"));
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].checkpoint.as_ref().unwrap(), &sample());
        assert_eq!(parsed[1].source, "f:3");
        assert!(parsed[1].checkpoint.is_err());
        let short = line.replace(&"ab".repeat(32), "abab");
        assert!(parse_lines("f", &short)[0].checkpoint.is_err());
    }

    #[tokio::test]
    async fn file_sink_appends_lines() {
        let dir = std::env::temp_dir().join(format!("conclave-cp-{}", uuid::Uuid::new_v4()));
        let sink = FileSink::new(&dir);
        let mut c = sample();
        sink.append(&c).await.unwrap();
        c.seq = 43;
        sink.append(&c).await.unwrap();
        let read = read_dir(&dir).unwrap();
        let seqs: Vec<i64> = read.iter().map(|s| s.checkpoint.as_ref().unwrap().seq).collect();
        assert_eq!(seqs, [42, 43]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(FileSink::file_for(&dir, c.tenant_id)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
