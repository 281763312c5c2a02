//! `conclave keys status | rotate | retire`: the tenants' master keys from the command line, on
//! the same database, object store and key provider as `serve` (the server may be running).

use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use conclave_core::ids::TenantId;
use conclave_core::Conclave;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Versions in use, per tenant: how many wrapped keys each master-key version holds.
    Status {
        /// One tenant (default: every tenant holding keys).
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
    },
    /// Makes a new master-key version current and rewraps every key under it (content is not
    /// re-encrypted). With `--resume`, finishes an interrupted rewrap without a new version.
    Rotate {
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        #[arg(long)]
        resume: bool,
    },
    /// Destroys a master-key version: every backup whose keys it wrapped becomes unreadable.
    /// Refused while live keys still use it.
    Retire {
        #[arg(long)]
        version: u32,
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
    },
}

pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    crate::log::init("warn");
    let core = crate::serve::offline_core(&config).await?;
    let tenants = |only: Option<uuid::Uuid>| {
        let core = core.clone();
        async move {
            match only {
                Some(t) => Ok::<_, anyhow::Error>(vec![TenantId(t)]),
                None => Ok(core.store().tenants_with_keys().await.map_err(|e| anyhow::anyhow!("{e}"))?),
            }
        }
    };
    match command {
        KeysCommand::Status { tenant } => {
            for t in tenants(tenant).await? {
                print_status(&core, t).await?;
            }
        }
        KeysCommand::Rotate { tenant, resume } => {
            for t in tenants(tenant).await? {
                rotate(&core, t, resume).await?;
            }
        }
        KeysCommand::Retire { version, tenant } => {
            for t in tenants(tenant).await? {
                core.retire_tenant_key(t, version)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("tenant {}", t.0))?;
                println!("tenant {}: master-key version {version} retired", t.0);
            }
        }
    }
    Ok(())
}

async fn print_status(core: &Arc<Conclave>, tenant: TenantId) -> anyhow::Result<()> {
    let s = core.tenant_keys_status(tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("tenant {}  provider {}  key {}  current version {}", tenant.0, s.provider, s.key_id, s.current_version);
    for v in &s.versions {
        let version = v.version.map_or("unrecorded".to_owned(), |v| v.to_string());
        println!(
            "  version {version:>10}: {} tenant, {} library, {} conversation keys",
            v.tenant_keys, v.library_keys, v.conversation_keys
        );
    }
    Ok(())
}

async fn rotate(core: &Arc<Conclave>, tenant: TenantId, resume: bool) -> anyhow::Result<()> {
    let version = if resume {
        core.tenant_keys_status(tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?.current_version
    } else {
        core.rotate_tenant_key(tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let pending = core.keys_below(tenant, version).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = ProgressBar::new(pending);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} keys  {elapsed_precise} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("tenant {} -> v{version}", tenant.0));
    let report = core
        .rewrap_tenant(tenant, version, |done| bar.set_position(done))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("rewrapping tenant {} (run `conclave keys rotate --resume` to continue)", tenant.0))?;
    bar.finish_and_clear();
    println!(
        "tenant {}: version {version} current; {} keys rewrapped, {} changed meanwhile",
        tenant.0, report.rewrapped, report.skipped
    );
    Ok(())
}
