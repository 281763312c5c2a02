//! `conclave audit …`: offline verification of the audit log against signed checkpoints, the
//! checkpoint public key for auditors, and JSON Lines export; and the checkpoint writer's wiring
//! for `serve`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use conclave_core::checkpoint::{self, Checkpointer, SourcedCheckpoint};
use conclave_core::ids::TenantId;
use conclave_core::service::audit::ExportFilter;
use conclave_core::Conclave;
use futures::StreamExt as _;
use uuid::Uuid;

use crate::config::Config;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log (hash chain and signed checkpoints) from the database, with the server
    /// running or stopped; exits non-zero and names the first bad event or checkpoint when
    /// anything is wrong.
    Verify {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<Uuid>,
        /// Checkpoint folder or container URL (default: the configured one).
        #[arg(long)]
        checkpoints: Option<String>,
        /// A checkpoint public key (PEM) to trust; repeat it to trust the keys of earlier
        /// signers too (default: the one in the local key file).
        #[arg(long)]
        public_key: Vec<PathBuf>,
    },
    /// Print the checkpoint signing key's public half (PEM), for auditors to keep.
    PublicKey,
    /// Write a tenant's events as JSON Lines (one event per line), for a SIEM.
    Export {
        /// The tenant (default: the only one).
        #[arg(long)]
        tenant: Option<Uuid>,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after_seq: i64,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    crate::log::init("warn");
    match command {
        AuditCommand::Verify { tenant, checkpoints, public_key } => {
            verify(&config, tenant, checkpoints, public_key).await
        }
        AuditCommand::PublicKey => {
            let signer = checkpoint_signer(&config).await?;
            let der = signer.public_key().await?;
            print!("{}", conclave_crypto::public_key_pem(&der));
            Ok(())
        }
        AuditCommand::Export { tenant, after_seq, out } => export(&config, tenant, after_seq, out).await,
    }
}

async fn local_provider(config: &Config) -> anyhow::Result<conclave_crypto::LocalKeyProvider> {
    if config.keys.provider != "local" {
        bail!(
            "the checkpoint key of the '{}' key provider is not available to this command yet; pass --public-key",
            config.keys.provider
        );
    }
    let path = config.key_file();
    conclave_crypto::LocalKeyProvider::open(&path)
        .await
        .with_context(|| format!("the local key file {}", path.display()))
}

/// The key that signs checkpoints: an EC P-256 key in Key Vault with the `azure-key-vault`
/// provider, else the Ed25519 key in the local key file.
async fn checkpoint_signer(config: &Config) -> anyhow::Result<Arc<dyn conclave_crypto::CheckpointSigner>> {
    if config.keys.provider == "azure-key-vault" {
        let url =
            config.keys.key_vault_url.as_deref().context("CONCLAVE_KEY_VAULT_URL is needed with azure-key-vault")?;
        let name = &config.audit.signing_key_name;
        let client = crate::serve::key_vault_client(url)?;
        return Ok(Arc::new(conclave_azure::KeyVaultSigner::connect(client, name).await.with_context(|| {
            format!("the audit checkpoint key '{name}' in the vault (an EC P-256 key; CONCLAVE_AUDIT_SIGNING_KEY_NAME)")
        })?));
    }
    Ok(Arc::new(local_provider(config).await?.checkpoint_signer().await.context("the checkpoint signing key")?))
}

/// Turns on signed checkpoints for a serving process.
pub async fn start_checkpoints(config: &Config, core: &Conclave) -> anyhow::Result<()> {
    let signer = checkpoint_signer(config).await?;
    let location = config.checkpoint_location();
    let sink = crate::checkpoint_sink::open(config, &location)?;
    tracing::info!(sink = %location, key_id = %signer.key_id(), every_seconds = config.audit.checkpoint_seconds, "audit checkpoints on");
    core.set_checkpointer(Checkpointer::new(signer, vec![sink], Duration::from_secs(config.audit.checkpoint_seconds)));
    Ok(())
}

async fn verify(
    config: &Config,
    only: Option<Uuid>,
    checkpoints: Option<String>,
    public_keys: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for path in &public_keys {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.push(conclave_crypto::public_key_from_pem(&pem).with_context(|| format!("{}", path.display()))?);
    }
    if keys.is_empty() && config.keys.provider == "azure-key-vault" {
        // The vault's public key: the vault, not the database, is trusted for it.
        keys.push(checkpoint_signer(config).await?.public_key().await?);
    }
    if keys.is_empty() {
        keys.push(
            local_provider(config)
                .await?
                .checkpoint_public_key()
                .await?
                .context("the local key file has no checkpoint key yet; pass --public-key")?,
        );
    }
    let db = crate::serve::open_database(config).await?;
    let store = db.clone().into_store();
    let explicit = checkpoints.is_some();
    let location = checkpoints.unwrap_or_else(|| config.checkpoint_location());
    let kept: Vec<SourcedCheckpoint> = match crate::checkpoint_sink::read_all(config, &location).await {
        Ok(found) => found,
        Err(e) if !explicit => {
            println!("note: no checkpoints read from {location} ({e:#}); checking those in the database only");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let fingerprints: Vec<String> = keys.iter().map(|k| fingerprint(k)).collect();
    println!("Checkpoints: {} read from {location}; trusted key(s) {}", kept.len(), fingerprints.join(", "));

    let heads = store.audit_heads().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tenants: Vec<TenantId> = heads.iter().map(|(t, _, _)| *t).collect();
    let mut problems = 0usize;
    // Checkpoints for a tenant the database no longer has.
    for c in kept.iter().filter_map(|s| s.checkpoint.as_ref().ok()) {
        if !tenants.contains(&c.tenant_id) && only.is_none_or(|o| o == c.tenant_id.0) {
            println!(
                "Tenant {}: FAILED: checkpoints name this tenant but the database has no such tenant",
                c.tenant_id
            );
            tenants.push(c.tenant_id);
            problems += 1;
        }
    }
    for tenant in heads.iter().map(|(t, _, _)| *t).filter(|t| only.is_none_or(|o| o == t.0)) {
        let total = heads.iter().find(|(t, _, _)| *t == tenant).map_or(0, |(_, seq, _)| *seq);
        let mut sources = kept.clone();
        sources.extend(
            checkpoint::database_checkpoints(store.as_ref(), tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("tenant {tenant}"));
        let progress = |n: i64| bar.set_position(u64::try_from(n).unwrap_or(0));
        let v = checkpoint::verify_log(store.as_ref(), tenant, sources, &keys, &progress)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bar.finish_and_clear();
        println!(
            "Tenant {tenant}: {} events checked, head {}; {} checkpoint(s) agree{}",
            v.events,
            v.head.as_deref().unwrap_or("-"),
            v.checkpoints,
            v.checkpoint_seq.map(|s| format!(" (newest at event {s})")).unwrap_or_default()
        );
        if let Some(seq) = v.first_bad_seq {
            println!(
                "  FAILED: first bad event: seq {seq} (edited, removed, inserted, reordered or rewritten from here)"
            );
        }
        if let Some(bad) = &v.bad_checkpoint {
            let seq = bad.seq.map(|s| format!(" naming event {s}")).unwrap_or_default();
            println!("  FAILED: bad checkpoint at {}{seq}: {}", bad.source, bad.reason);
        }
        if v.ok {
            println!("  OK");
        } else {
            problems += 1;
        }
    }
    db.close().await;
    if problems > 0 {
        bail!("the audit log failed verification for {problems} tenant(s)");
    }
    println!("The audit log verified.");
    Ok(())
}

/// The first 16 hex digits of SHA-256 over the key's DER, to compare with what the auditor kept.
fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(der);
    format!("SHA256:{}", conclave_core::records::hex(&digest[..8]))
}

async fn export(config: &Config, tenant: Option<Uuid>, after_seq: i64, out: Option<PathBuf>) -> anyhow::Result<()> {
    if after_seq < 0 {
        bail!("--after-seq must be 0 or more");
    }
    let db = crate::serve::open_database(config).await?;
    let core = crate::serve::plain_core(config, &db)?;
    let store = core.store().clone();
    let heads = store.audit_heads().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tenant, upto) = match tenant {
        Some(t) => {
            heads.iter().find(|(id, _, _)| id.0 == t).map(|(id, seq, _)| (*id, *seq)).context("no such tenant")?
        }
        None => match heads.as_slice() {
            [(id, seq, _)] => (*id, *seq),
            [] => bail!("the database has no tenant yet"),
            _ => bail!("the database has {} tenants: name one with --tenant", heads.len()),
        },
    };
    let filter = ExportFilter { after_seq, ..Default::default() };
    core.record_offline_export(tenant, &filter, upto).await;
    let mut sink: Box<dyn std::io::Write + Send> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut stream = std::pin::pin!(conclave_core::service::audit::ndjson_stream(store, tenant, filter, upto));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("{e}"))?;
        sink.write_all(&chunk)?;
    }
    sink.flush()?;
    db.close().await;
    Ok(())
}
