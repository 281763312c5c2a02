//! The local key file: its format, the permission check on load, and atomic replacement.
//!
//! # Key file format, version 1
//!
//! A UTF-8 JSON document, mode `0600`, in a folder created with mode `0700`:
//!
//! ```json
//! {
//!   "format": "conclave-local-kek",
//!   "version": 1,
//!   "key_id": "local:6f1c2c8e-3b7a-4d0e-9d2f-0a4c1e2b3d4f",
//!   "created_at": "2026-05-01T09:30:00Z",
//!   "tenants": {
//!     "01968f4e-7a3c-7d21-9f00-2b6c5e4d3a21": {
//!       "current": 2,
//!       "disabled": false,
//!       "versions": {
//!         "1": { "created_at": "2026-05-01T09:30:00Z", "retired_at": "2026-06-01T08:00:00Z", "material": null },
//!         "2": { "created_at": "2026-05-20T12:00:00Z", "material": "<32 bytes, standard base64>" }
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! - `key_id` is generated once, when the file is created, and recorded in every key the file's
//!   KEKs wrap; a wrapped key from another key file is therefore reported as "not found", not as
//!   tampered.
//! - Each tenant has its own random KEK versions (not keys derived from one master secret), so
//!   one tenant's version can be retired, destroying its material, without touching any other
//!   tenant: per-tenant crypto-shredding, and per-tenant rotation, as with a KMS.
//! - `current` is the version new keys are wrapped under; it always has material.
//! - A retired version keeps its entry (so unwrapping reports "retired", not "not found") with
//!   `retired_at` set and `material` null.
//! - `signing` (optional) holds the Ed25519 key that signs audit checkpoints: `key_id`,
//!   `created_at` and the 32-byte secret seed (`private_key`, standard base64). A file without it
//!   (written before checkpoints existed) is read as before, and the key is added, by the same
//!   locked atomic replacement as a new KEK version, the first time a checkpoint is signed.
//! - `disabled: true` is the local kill switch: every wrap and unwrap for the tenant fails as
//!   revoked until it is enabled again.
//!
//! Every change writes a new file beside the old one (mode `0600`), fsyncs it, renames it over
//! the old one and fsyncs the folder, so a crash leaves either the old or the new file, whole.
//! The old file's blocks are then overwritten with zeros through a handle opened before the
//! rename: on an ordinary local file system that removes retired material from the disk too
//! (copy-on-write file systems, SSD remapping and snapshots may still keep old blocks: put the key
//! file on a volume without snapshots). A file readable or writable by group or others is
//! refused at start. One process uses the file at a time: replicas need a KMS provider.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use super::keyring::{KekVersion, Keyring, SigningEntry, TenantKeys};
use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId};

const FORMAT: &str = "conclave-local-kek";
const VERSION: u32 = 1;

/// What the file says about itself.
#[derive(Clone)]
pub(crate) struct FileMeta {
    pub(crate) key_id: KeyId,
    pub(crate) created_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1<'a> {
    #[serde(borrow)]
    format: Cow<'a, str>,
    version: u32,
    #[serde(borrow)]
    key_id: Cow<'a, str>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(borrow)]
    tenants: BTreeMap<Uuid, FileTenant<'a>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    signing: Option<FileSigning<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSigning<'a> {
    #[serde(borrow)]
    key_id: Cow<'a, str>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Borrowed from the zeroizing buffer, like KEK material.
    #[serde(borrow)]
    private_key: &'a str,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant<'a> {
    current: u32,
    #[serde(default)]
    disabled: bool,
    #[serde(borrow)]
    versions: BTreeMap<u32, FileVersion<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVersion<'a> {
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    retired_at: Option<OffsetDateTime>,
    /// Borrowed from the zeroizing read buffer, so the encoded material is never copied into an
    /// allocation nobody wipes. Base64 needs no JSON escapes, so borrowing always works.
    #[serde(borrow)]
    material: Option<&'a str>,
}

/// Reads the key file, or creates it (and its folder) if it does not exist.
pub(crate) fn load_or_create(path: &Path) -> Result<(FileMeta, Keyring)> {
    if let Some(found) = load(path)? {
        return Ok(found);
    }
    let meta = FileMeta { key_id: KeyId::new_local(), created_at: OffsetDateTime::now_utc() };
    let ring = Keyring::default();
    let bytes = encode(&meta, &ring)?;
    create_dir(path)?;
    if create_new(path, &bytes).map_err(|source| io_error(path, source))? {
        tracing::info!(path = %path.display(), key_id = %meta.key_id, "created local key file");
        Ok((meta, ring))
    } else {
        // Another process created it between our read and our write: use theirs.
        load(path)?.ok_or_else(|| invalid(path, "vanished while being created"))
    }
}

/// Reads and checks the key file; `None` if it does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<(FileMeta, Keyring)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let metadata = file.metadata().map_err(|e| io_error(path, e))?;
    if !metadata.is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    check_permissions(path, &metadata)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(metadata.len() as usize + 1));
    file.read_to_end(&mut bytes).map_err(|e| io_error(path, e))?;
    decode(path, &bytes).map(Some)
}

#[cfg(unix)]
fn check_permissions(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::InsecurePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _metadata: &fs::Metadata) -> Result<()> {
    Ok(())
}

fn decode(path: &Path, bytes: &[u8]) -> Result<(FileMeta, Keyring)> {
    let file: FileV1<'_> = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the line and column, never the value.
        invalid(path, &format!("not a key file: {e}"))
    })?;
    if file.format != FORMAT {
        return Err(invalid(path, "not a conclave-local-kek file"));
    }
    if file.version != VERSION {
        return Err(invalid(path, &format!("unsupported key file version {}", file.version)));
    }
    let key_id = KeyId::new(file.key_id.as_ref()).map_err(|_| invalid(path, "invalid key_id"))?;
    let mut ring = Keyring::default();
    for (tenant, entry) in file.tenants {
        let mut versions = BTreeMap::new();
        for (version, v) in entry.versions {
            if version == 0 {
                return Err(invalid(path, &format!("tenant {tenant}: version 0")));
            }
            let material = match (v.material, v.retired_at) {
                (Some(encoded), None) => Some(Arc::new(decode_key(encoded).ok_or_else(|| {
                    invalid(path, &format!("tenant {tenant} version {version}: material is not 32 bytes of base64"))
                })?)),
                (None, Some(_)) => None,
                (Some(_), Some(_)) => {
                    return Err(invalid(path, &format!("tenant {tenant} version {version}: retired but has material")))
                }
                (None, None) => {
                    return Err(invalid(path, &format!("tenant {tenant} version {version}: no material")));
                }
            };
            versions.insert(version, KekVersion { created_at: v.created_at, retired_at: v.retired_at, material });
        }
        if versions.get(&entry.current).is_none_or(|v| v.material.is_none()) {
            return Err(invalid(
                path,
                &format!("tenant {tenant}: current version {} is missing or retired", entry.current),
            ));
        }
        ring.tenants.insert(tenant, TenantKeys { current: entry.current, disabled: entry.disabled, versions });
    }
    if let Some(signing) = file.signing {
        let seed = decode_key(signing.private_key)
            .ok_or_else(|| invalid(path, "signing: private_key is not 32 bytes of base64"))?;
        if signing.key_id.is_empty() || signing.key_id.contains(char::is_control) {
            return Err(invalid(path, "signing: invalid key_id"));
        }
        ring.signing = Some(SigningEntry {
            key_id: signing.key_id.into_owned(),
            created_at: signing.created_at,
            key: Arc::new(ed25519_dalek::SigningKey::from_bytes(seed.expose_secret())),
        });
    }
    Ok((FileMeta { key_id, created_at: file.created_at }, ring))
}

fn decode_key(encoded: &str) -> Option<Key> {
    let mut buf = Zeroizing::new([0u8; 64]);
    let len = BASE64.decode_slice(encoded, &mut buf[..]).ok()?;
    if len != Key::LEN {
        return None;
    }
    Some(Key::init_with(|k| k.copy_from_slice(&buf[..Key::LEN])))
}

/// The file's bytes, in a buffer that is wiped when dropped.
pub(crate) fn encode(meta: &FileMeta, ring: &Keyring) -> Result<Zeroizing<Vec<u8>>> {
    let encoded: BTreeMap<(Uuid, u32), Zeroizing<String>> = ring
        .tenants
        .iter()
        .flat_map(|(tenant, keys)| keys.versions.iter().map(move |(version, v)| (tenant, version, v)))
        .filter_map(|(tenant, version, v)| {
            v.material.as_ref().map(|key| ((*tenant, *version), Zeroizing::new(BASE64.encode(key.expose_secret()))))
        })
        .collect();
    let signing_seed = ring.signing.as_ref().map(|s| Zeroizing::new(BASE64.encode(s.key.to_bytes())));
    let file = FileV1 {
        signing: ring.signing.as_ref().zip(signing_seed.as_ref()).map(|(s, seed)| FileSigning {
            key_id: Cow::Borrowed(s.key_id.as_str()),
            created_at: s.created_at,
            private_key: seed.as_str(),
        }),
        format: Cow::Borrowed(FORMAT),
        version: VERSION,
        key_id: Cow::Borrowed(meta.key_id.as_str()),
        created_at: meta.created_at,
        tenants: ring
            .tenants
            .iter()
            .map(|(tenant, keys)| {
                let versions = keys
                    .versions
                    .iter()
                    .map(|(version, v)| {
                        let material = encoded.get(&(*tenant, *version)).map(|s| s.as_str());
                        (*version, FileVersion { created_at: v.created_at, retired_at: v.retired_at, material })
                    })
                    .collect();
                (*tenant, FileTenant { current: keys.current, disabled: keys.disabled, versions })
            })
            .collect(),
    };
    // Reserve generously so the buffer never reallocates (a reallocation would leave an unwiped
    // copy of the material behind).
    let versions: usize = ring.tenants.values().map(|t| t.versions.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(1024 + 160 * ring.tenants.len() + 256 * versions));
    serde_json::to_writer_pretty(&mut *out, &file)
        .map_err(|_| CryptoError::InvalidInput("key file could not be serialised"))?;
    out.push(b'\n');
    Ok(out)
}

fn create_dir(path: &Path) -> Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error(dir, e))
}

/// Replaces the file at `path` atomically with `bytes`, then wipes the replaced file's blocks.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    // Opened before the rename, so the old contents can still be reached and wiped afterwards.
    let old = OpenOptions::new().write(true).open(path).ok();
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)?;
    if let Some(old) = old {
        if let Err(e) = wipe(old) {
            tracing::warn!(path = %path.display(), error = %e, "could not overwrite the replaced key file");
        }
    }
    Ok(())
}

/// Creates the file at `path` with `bytes` unless it exists; `false` if it already did.
fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = write_temp(path, bytes)?;
    // A hard link, unlike a rename, refuses to replace an existing file.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keys".into());
    let tmp = path.with_file_name(format!(".{name}.tmp-{:016x}", rand::rngs::OsRng.next_u64()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        // The umask can only remove bits from 0600, but say it explicitly.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn wipe(mut file: File) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut zeros = vec![0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    zeros.zeroize();
    file.sync_all()
}

fn invalid(path: &Path, reason: &str) -> CryptoError {
    CryptoError::InvalidKeyFile { path: path.to_owned(), reason: reason.to_owned() }
}

fn io_error(path: &Path, source: io::Error) -> CryptoError {
    CryptoError::Io { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let meta = FileMeta { key_id: KeyId::new("local:x").unwrap(), created_at: OffsetDateTime::UNIX_EPOCH };
        let mut ring = Keyring::default();
        let t = Uuid::now_v7();
        ring.ensure(t);
        ring.rotate(t).unwrap();
        ring.retire(&meta.key_id, t, 1).unwrap();
        let bytes = encode(&meta, &ring).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"retired_at\""));
        let (meta2, ring2) = decode(Path::new("k.json"), &bytes).unwrap();
        assert_eq!(meta2.key_id, meta.key_id);
        let keys = &ring2.tenants[&t];
        assert_eq!(keys.current, 2);
        assert!(keys.versions[&1].material.is_none());
        assert_eq!(
            keys.versions[&2].material.as_ref().unwrap().expose_secret(),
            ring.tenants[&t].versions[&2].material.as_ref().unwrap().expose_secret()
        );
        assert!(ring2.signing.is_none(), "no signing key until one is asked for");
        assert!(!text.contains("\"signing\""), "files without a signing key keep their old shape");
    }

    #[test]
    fn signing_key_round_trips() {
        let meta = FileMeta { key_id: KeyId::new("local:x").unwrap(), created_at: OffsetDateTime::UNIX_EPOCH };
        let ring = Keyring { signing: Some(SigningEntry::generate()), ..Keyring::default() };
        let bytes = encode(&meta, &ring).unwrap();
        let (_, ring2) = decode(Path::new("k.json"), &bytes).unwrap();
        let (a, b) = (ring.signing.unwrap(), ring2.signing.unwrap());
        assert_eq!(a.key_id, b.key_id);
        assert_eq!(a.key.to_bytes(), b.key.to_bytes());
        let text = std::str::from_utf8(&bytes).unwrap().replace(&BASE64.encode(a.key.to_bytes()), "AAAA");
        assert!(matches!(decode(Path::new("k.json"), text.as_bytes()), Err(CryptoError::InvalidKeyFile { .. })));
    }

    #[test]
    fn decode_rejects_inconsistent_files() {
        let p = Path::new("k.json");
        let base = |tenant_body: &str| {
            format!(
                r#"{{"format":"conclave-local-kek","version":1,"key_id":"local:x","created_at":"2026-01-01T00:00:00Z","tenants":{{"01968f4e-7a3c-7d21-9f00-2b6c5e4d3a21":{tenant_body}}}}}"#
            )
        };
        let key = BASE64.encode([1u8; 32]);
        let ok = base(&format!(
            r#"{{"current":1,"versions":{{"1":{{"created_at":"2026-01-01T00:00:00Z","material":"{key}"}}}}}}"#
        ));
        assert!(decode(p, ok.as_bytes()).is_ok(), "{ok}");
        let cases = [
            base(&format!(
                r#"{{"current":2,"versions":{{"1":{{"created_at":"2026-01-01T00:00:00Z","material":"{key}"}}}}}}"#
            )),
            base(r#"{"current":1,"versions":{"1":{"created_at":"2026-01-01T00:00:00Z","material":"AAAA"}}}"#),
            base(r#"{"current":1,"versions":{"1":{"created_at":"2026-01-01T00:00:00Z","material":null}}}"#),
            ok.replace("\"version\":1", "\"version\":2"),
            ok.replace("conclave-local-kek", "other"),
            ok.replace("\"current\"", "\"extra\":1,\"current\""),
            "{".to_owned(),
        ];
        for case in cases {
            assert!(matches!(decode(p, case.as_bytes()), Err(CryptoError::InvalidKeyFile { .. })), "{case}");
        }
    }
}
