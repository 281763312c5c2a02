//! The `conclave` command: `serve`, `migrate`, `check-config`, `admin create`, `keys` and `audit`.

mod audit_cli;
mod backup_cli;
mod checkpoint_sink;
mod clamd;
mod config;
mod keys_cli;
mod listener;
mod log;
mod serve;
mod tls;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Severity};

#[derive(Parser)]
#[command(name = "conclave", version, about = "Conclave: a secure, self-hostable workspace for AI agents")]
struct Cli {
    /// A TOML configuration file; CONCLAVE_* environment variables override it.
    #[arg(long, global = true, env = "CONCLAVE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the configuration report; exits non-zero when a setting is unsafe for the profile.
    CheckConfig,
    /// Administration from the command line.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The tenants' master keys: status, rotation, retirement.
    Keys {
        #[command(subcommand)]
        command: keys_cli::KeysCommand,
    },
    /// Copies the embedded database and the document objects into a new folder, with a manifest
    /// of digests; never a master key. The server may keep running.
    Backup {
        /// A new or empty folder outside the data folder.
        folder: PathBuf,
    },
    /// Restores a backup into an empty data folder, after checking every file against the
    /// manifest and every key against the configured master key.
    Restore {
        /// A folder written by `conclave backup`.
        folder: PathBuf,
    },
    /// The audit log: offline verification, the checkpoint public key, export.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator (the way to make the first one in production).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Administrator")]
        display_name: String,
        /// Read the password from standard input instead of generating a temporary one.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// glibc gives each thread that allocates its own arena; SQLite's connection threads, handling
/// large sealed blobs, would then each keep freed memory resident. Two arenas keep the resident
/// size close to what is in use, at no measurable speed cost for this workload.
///
/// Document uploads and downloads allocate and free buffers of a few hundred KiB to a few MiB
/// (multipart chunks, encrypted batches, file blocks). By default glibc serves those with fresh
/// `mmap`s, or trims them off the heap as soon as they are freed, so every buffer is paid for
/// again in page faults and in zeroing its pages: a fifth of the server's CPU time for an
/// upload (bench/RESULTS.md, "Documents"). Serving allocations up to 4 MiB from the heap and
/// trimming only beyond 16 MiB of free space reuses those pages instead; idle memory is
/// unchanged and an upload's resident growth stays within its target.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
        mallopt(M_MMAP_THRESHOLD, 4 << 20);
        mallopt(M_TRIM_THRESHOLD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    // Both ring and aws-lc-rs are compiled in (dependencies ask for each), so rustls cannot pick
    // a process-wide provider by itself; clients that use the default (Redis over TLS) get ring,
    // as the server's own listener does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conclave: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => check_config(&config),
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("conclave: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(async move {
                match command {
                    Command::Serve => serve::serve(config).await,
                    Command::Migrate => serve::migrate(config).await,
                    Command::Admin { command: AdminCommand::Create { email, display_name, password_stdin } } => {
                        let password = if password_stdin {
                            let mut p = String::new();
                            std::io::stdin().read_to_string(&mut p)?;
                            Some(p.trim_end_matches(['\n', '\r']).to_owned())
                        } else {
                            None
                        };
                        serve::admin_create(config, email, display_name, password).await
                    }
                    Command::Keys { command } => keys_cli::run(config, command).await,
                    Command::Audit { command } => audit_cli::run(config, command).await,
                    Command::Backup { folder } => backup_cli::backup(config, folder).await,
                    Command::Restore { folder } => backup_cli::restore(config, folder).await,
                    Command::CheckConfig => unreachable!("handled above"),
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("conclave: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(config: &Config) -> ExitCode {
    let findings = config.findings();
    let profile = match config.profile {
        config::Profile::Dev => "dev",
        config::Profile::Production => "production",
    };
    println!("Conclave configuration report (profile {profile})");
    println!("  listen: {}   database: {}", config.http.listen, redact(&config.database_url()));
    if findings.is_empty() {
        println!("  no findings");
    }
    for f in &findings {
        let mark = match f.severity {
            Severity::Error => "UNSAFE ",
            Severity::Warning => "warning",
            Severity::Note => "note   ",
        };
        println!("  {mark} {}: {}", f.variable, f.message);
    }
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    if errors > 0 {
        println!("{errors} setting(s) must change before Conclave starts in this profile.");
        ExitCode::FAILURE
    } else {
        println!("Conclave can start with this configuration.");
        ExitCode::SUCCESS
    }
}

/// A database URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
