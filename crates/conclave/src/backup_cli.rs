//! `conclave backup <folder>` and `conclave restore <folder>`: the embedded database and the
//! document objects it names, copied as they are (everything sealed stays sealed), with a
//! manifest of sizes and SHA-256 digests. A backup never holds a master key: the local key file
//! and the Key Vault key stay where they are, so a backup opens only with them, and retiring a
//! master-key version makes every older backup unreadable for good.
//!
//! The server may keep running during a backup: the database copy is one SQLite read
//! transaction (`VACUUM INTO`) and objects are immutable once written. An object deleted between
//! the copy and its turn is listed as missing. A restore goes into an empty data folder only,
//! checks every file against the manifest first and every wrapped key against the configured
//! master key before anything is put in place, and the database appears last, in one rename.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use conclave_core::service::backup::{is_document_object_key, referenced_objects};
use conclave_core::Conclave;
use conclave_store::Database;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::serve::{core_on, open_database};

const FORMAT: &str = "conclave-backup/1";
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "conclave.db";
const OBJECTS: &str = "objects";
const CHECKPOINTS: &str = "audit-checkpoints";

/// What a backup holds, written last: a folder without it is an interrupted backup.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    created_at: String,
    conclave_version: String,
    /// The master key the backup's keys are wrapped by; it is not in the backup.
    master_key: MasterKey,
    database: FileEntry,
    objects: Vec<ObjectEntry>,
    /// Objects the database names that were gone when their turn came (deleted meanwhile).
    missing_objects: Vec<String>,
    audit_checkpoints: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MasterKey {
    provider: String,
    key_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ObjectEntry {
    key: String,
    size: u64,
    sha256: String,
}

pub async fn backup(config: Config, dest: PathBuf) -> anyhow::Result<()> {
    crate::log::init("warn");
    sqlite_file(&config)?;
    prepare_destination(&config, &dest)?;
    let db = open_database(&config).await?;
    let core = core_on(&config, &db).await?;

    let partial = dest.join(format!("{DATABASE}.partial"));
    db.snapshot_into(&partial).await.context("copying the database")?;
    let keys = objects_named_by(&partial).await?;

    let sizes = core.document_object_sizes().await.map_err(|e| anyhow::anyhow!("{e}")).context("listing objects")?;
    let total: u64 = keys.iter().filter_map(|k| sizes.get(k)).sum();
    let bar = bytes_bar(total, "objects");
    let mut objects = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    for key in keys {
        if !sizes.contains_key(&key) {
            missing.push(key);
            continue;
        }
        match export(&core, &dest, &key, &bar).await? {
            Some(entry) => objects.push(entry),
            None => missing.push(key),
        }
    }
    bar.finish_and_clear();
    let audit_checkpoints = copy_checkpoints(&config, &dest)?;

    let database = file_entry(&partial, DATABASE)?;
    std::fs::rename(&partial, dest.join(DATABASE)).context("naming the database copy")?;
    let master_key = match core.master_keys() {
        Some(p) => {
            let info = p.describe();
            MasterKey { provider: info.provider, key_id: info.key_id.to_string() }
        }
        None => MasterKey { provider: "none".into(), key_id: String::new() },
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        conclave_version: env!("CARGO_PKG_VERSION").into(),
        master_key,
        database,
        objects,
        missing_objects: missing,
        audit_checkpoints,
    };
    write_manifest(&dest, &manifest)?;
    db.close().await;

    let bytes: u64 = manifest.objects.iter().map(|o| o.size).sum();
    println!(
        "backup written to {}: database ({}), {} objects ({}), {} audit checkpoint files",
        dest.display(),
        human(manifest.database.size),
        manifest.objects.len(),
        human(bytes),
        manifest.audit_checkpoints.len()
    );
    if !manifest.missing_objects.is_empty() {
        println!(
            "{} objects the database named were deleted while the backup ran; their documents will not open from this backup",
            manifest.missing_objects.len()
        );
    }
    println!(
        "It holds no master key: it opens only with {} key {} (keep the key file apart from backups).",
        manifest.master_key.provider, manifest.master_key.key_id
    );
    Ok(())
}

pub async fn restore(config: Config, source: PathBuf) -> anyhow::Result<()> {
    crate::log::init("warn");
    let manifest = read_manifest(&source)?;
    let target = sqlite_file(&config)?;
    if target.exists() {
        bail!(
            "{} already exists: restore into an empty data folder (move the current database away first, with its -wal and -shm files)",
            target.display()
        );
    }
    verify_files(&source, &manifest)?;

    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let restoring =
        target.with_file_name(format!("{}.restoring", target.file_name().and_then(|n| n.to_str()).unwrap_or(DATABASE)));
    remove_sqlite(&restoring);
    std::fs::copy(source.join(DATABASE), &restoring).context("copying the database")?;
    let result = restore_onto(&config, &source, &manifest, &restoring).await;
    if let Err(e) = result {
        remove_sqlite(&restoring);
        return Err(e);
    }
    std::fs::rename(&restoring, &target).context("putting the database in place")?;
    let checkpoints = restore_checkpoints(&config, &source, &manifest)?;
    let bytes: u64 = manifest.objects.iter().map(|o| o.size).sum();
    println!(
        "restored from {} (taken {}): database, {} objects ({}), {} audit checkpoint files; every key opens",
        source.display(),
        manifest.created_at,
        manifest.objects.len(),
        human(bytes),
        checkpoints
    );
    Ok(())
}

/// Migrates the copy at `restoring`, checks that every wrapped key opens, and puts the objects
/// into the configured store; the database is closed (its WAL folded in) before returning.
async fn restore_onto(config: &Config, source: &Path, manifest: &Manifest, restoring: &Path) -> anyhow::Result<()> {
    let mut on_copy = config.clone();
    on_copy.store.database_url = Some(format!("sqlite://{}", restoring.display()));
    let db = open_database(&on_copy).await.context("opening the backup's database")?;
    let outcome = async {
        let core = core_on(&on_copy, &db).await?;
        check_keys(&core, &manifest.master_key).await?;
        let total = manifest.objects.iter().map(|o| o.size).sum();
        let bar = bytes_bar(total, "objects");
        for object in &manifest.objects {
            let file = object_file(source, &object.key)?;
            core.import_object(&object.key, &file, |n| bar.inc(n))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!(
                        "writing {} (objects already written are removed by the orphan sweep within hours)",
                        object.key
                    )
                })?;
        }
        bar.finish_and_clear();
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    outcome
}

/// Every wrapped key of every tenant must open with the configured master key; otherwise the
/// restore stops, naming why (a retired version, another key file, a revoked key).
async fn check_keys(core: &Conclave, expected: &MasterKey) -> anyhow::Result<()> {
    let tenants = core.store().tenants_with_keys().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = ProgressBar::new_spinner();
    bar.set_message("checking keys");
    let mut opened = 0;
    let mut unreadable = Vec::new();
    for tenant in tenants {
        let report = core
            .check_tenant_keys(tenant, |n| bar.set_position(opened + n))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("checking the backup's keys against the master key")?;
        opened += report.opened;
        unreadable.extend(report.unreadable.into_iter().map(|u| (tenant, u)));
    }
    bar.finish_and_clear();
    if let Some((tenant, first)) = unreadable.first() {
        bail!(
            "{} of {} wrapped keys in this backup do not open with the configured master key (the backup's: {} {}); \
             tenant {} {:?} {}: {}. Nothing was restored.",
            unreadable.len(),
            opened + unreadable.len() as u64,
            expected.provider,
            expected.key_id,
            tenant.0,
            first.kind,
            first.id,
            first.reason
        );
    }
    Ok(())
}

/// The SQLite file the configuration names; backups and restores cover the embedded database.
fn sqlite_file(config: &Config) -> anyhow::Result<PathBuf> {
    let url = config.database_url();
    match url.strip_prefix("sqlite://") {
        Some(rest) => Ok(PathBuf::from(rest.split('?').next().unwrap_or(rest))),
        None => bail!(
            "`conclave backup` and `conclave restore` cover the embedded SQLite database; on PostgreSQL use pg_dump \
             (or Azure's point-in-time restore) and the object store's own versioning (docs/operations.md)"
        ),
    }
}

/// The destination must be new or empty, and outside the data folder (the next backup would
/// copy it, and removing the data folder would remove it).
fn prepare_destination(config: &Config, dest: &Path) -> anyhow::Result<()> {
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest).with_context(|| format!("reading {}", dest.display()))?;
        if entries.next().is_some() {
            bail!("{} is not empty: back up into a new folder", dest.display());
        }
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let (data, inside) = (absolute(&config.store.data_dir), absolute(dest));
    if inside.starts_with(&data) {
        let _ = std::fs::remove_dir(dest);
        bail!("{} is inside the data folder {}: put backups elsewhere", dest.display(), data.display());
    }
    set_private(dest)?;
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

#[cfg(unix)]
fn set_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

#[cfg(not(unix))]
fn set_private(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The object keys the database copy names.
async fn objects_named_by(copy: &Path) -> anyhow::Result<Vec<String>> {
    let snapshot = Database::connect(&format!("sqlite://{}", copy.display()), Duration::from_secs(10))
        .await
        .context("opening the database copy")?;
    let keys = referenced_objects(snapshot.clone().into_store().as_ref()).await.map_err(|e| anyhow::anyhow!("{e}"));
    snapshot.close().await;
    keys
}

/// Copies one object into the backup; `None` if it was deleted since the database copy.
async fn export(core: &Conclave, dest: &Path, key: &str, bar: &ProgressBar) -> anyhow::Result<Option<ObjectEntry>> {
    let path = object_file(dest, key)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = tokio::fs::File::create(&path).await.with_context(|| format!("creating {}", path.display()))?;
    match core.export_object(key, &mut file, |n| bar.inc(n)).await {
        Ok(copied) => {
            file.sync_all().await.with_context(|| format!("writing {}", path.display()))?;
            Ok(Some(ObjectEntry { key: key.to_owned(), size: copied.size, sha256: copied.sha256 }))
        }
        Err(conclave_core::Error::NotFound(_)) => {
            drop(file);
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("{e}")).with_context(|| format!("copying {key}")),
    }
}

/// Where an object's file is in a backup. Keys come from a manifest on restore: only document
/// objects' names are accepted (ids only: no `..`, no absolute path, nothing else).
fn object_file(root: &Path, key: &str) -> anyhow::Result<PathBuf> {
    if !is_document_object_key(key) {
        bail!("'{key}' is not a document object's name");
    }
    Ok(root.join(OBJECTS).join(key))
}

/// A checkpoint file's path inside `audit-checkpoints/`, from a manifest: plain relative
/// components only.
fn checkpoint_relative(entry: &FileEntry) -> anyhow::Result<&str> {
    match entry.path.strip_prefix(&format!("{CHECKPOINTS}/")) {
        Some(relative) if relative.split('/').all(|c| !c.is_empty() && c != "." && c != "..") => Ok(relative),
        _ => bail!("'{}' is not a checkpoint file's name", entry.path),
    }
}

/// The audit checkpoint folder, when checkpoints go to a local folder (an object-store
/// container is WORM storage of its own and is not copied).
fn checkpoint_folder(config: &Config) -> Option<PathBuf> {
    if config.audit.checkpoint_url.is_some() {
        return None;
    }
    Some(config.audit.checkpoint_dir.clone().unwrap_or_else(|| config.store.data_dir.join(CHECKPOINTS)))
}

fn copy_checkpoints(config: &Config, dest: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let Some(folder) = checkpoint_folder(config).filter(|f| f.is_dir()) else { return Ok(Vec::new()) };
    let mut entries = Vec::new();
    for file in files_under(&folder)? {
        let relative = file.strip_prefix(&folder).context("checkpoint path")?.to_string_lossy().replace('\\', "/");
        let target = dest.join(CHECKPOINTS).join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(&file, &target).with_context(|| format!("copying {}", file.display()))?;
        entries.push(file_entry(&target, &format!("{CHECKPOINTS}/{relative}"))?);
    }
    Ok(entries)
}

/// Puts the backup's checkpoint files into the configured folder, leaving any file already
/// there alone (checkpoints are append-only). Returns how many were written.
fn restore_checkpoints(config: &Config, source: &Path, manifest: &Manifest) -> anyhow::Result<usize> {
    let Some(folder) = checkpoint_folder(config) else { return Ok(0) };
    let mut written = 0;
    for entry in &manifest.audit_checkpoints {
        let target = folder.join(checkpoint_relative(entry)?);
        if target.exists() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(source.join(&entry.path), &target).with_context(|| format!("restoring {}", entry.path))?;
        written += 1;
    }
    Ok(written)
}

fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of the backup against the manifest, before anything is restored.
fn verify_files(source: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let total = manifest.database.size
        + manifest.objects.iter().map(|o| o.size).sum::<u64>()
        + manifest.audit_checkpoints.iter().map(|c| c.size).sum::<u64>();
    let bar = bytes_bar(total, "verifying");
    let check = |path: PathBuf, name: &str, size: u64, sha256: &str| -> anyhow::Result<()> {
        let (got_size, got_sha) = digest_file(&path, &bar).with_context(|| format!("reading {name} in the backup"))?;
        if got_size != size || got_sha != sha256 {
            bail!("{name} in the backup does not match its manifest (damaged or altered): nothing was restored");
        }
        Ok(())
    };
    check(source.join(DATABASE), DATABASE, manifest.database.size, &manifest.database.sha256)?;
    for object in &manifest.objects {
        check(object_file(source, &object.key)?, &object.key, object.size, &object.sha256)?;
    }
    for c in &manifest.audit_checkpoints {
        check(source.join(CHECKPOINTS).join(checkpoint_relative(c)?), &c.path, c.size, &c.sha256)?;
    }
    bar.finish_and_clear();
    Ok(())
}

fn digest_file(path: &Path, bar: &ProgressBar) -> std::io::Result<(u64, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        size += n as u64;
        bar.inc(n as u64);
    }
    Ok((size, conclave_core::records::hex(&digest.finalize())))
}

fn file_entry(path: &Path, name: &str) -> anyhow::Result<FileEntry> {
    let (size, sha256) =
        digest_file(path, &ProgressBar::hidden()).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileEntry { path: name.to_owned(), size, sha256 })
}

fn write_manifest(dest: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let partial = dest.join(format!("{MANIFEST}.partial"));
    let json = serde_json::to_vec_pretty(manifest)?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&partial).context("writing the manifest")?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, dest.join(MANIFEST)).context("writing the manifest")?;
    std::fs::File::open(dest).and_then(|d| d.sync_all()).context("syncing the backup folder")?;
    Ok(())
}

fn read_manifest(source: &Path) -> anyhow::Result<Manifest> {
    let path = source.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {MANIFEST}: not a Conclave backup, or one that was interrupted before it finished",
            source.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT {
        bail!("{} is a '{}' backup; this Conclave reads {FORMAT}", source.display(), manifest.format);
    }
    Ok(manifest)
}

/// Removes an SQLite file and its journal files (a restore that did not finish).
fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

fn bytes_bar(total: u64, prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_files_stay_under_the_backup() {
        let root = Path::new("/b");
        let key = format!("tenants/{0}/libraries/{0}/documents/{0}/v1-{0}", uuid::Uuid::new_v4());
        assert_eq!(object_file(root, &key).unwrap(), root.join(OBJECTS).join(&key));
        for bad in [
            "../etc/passwd",
            "tenants/../../x",
            "/tenants/a",
            "tenants//a",
            "tenants/./a",
            "other/a",
            "tenants/a\\..\\b",
        ] {
            assert!(object_file(root, bad).is_err(), "{bad}");
        }
        let entry = |path: &str| FileEntry { path: path.into(), size: 0, sha256: String::new() };
        assert_eq!(checkpoint_relative(&entry("audit-checkpoints/t/1.jsonl")).unwrap(), "t/1.jsonl");
        for bad in
            ["audit-checkpoints/../x", "audit-checkpoints/", "other/x", "/audit-checkpoints/x", "audit-checkpoints//x"]
        {
            assert!(checkpoint_relative(&entry(bad)).is_err(), "{bad}");
        }
    }
}
