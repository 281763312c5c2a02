//! The command line: `--version`, `--help`, `check-config`, `migrate`, `admin create`, and
//! `serve` refusing unsafe or impossible settings.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::app::{run_cli, Backend, CliOutput, Fetch, Site, TempDir, TestApp};

const QUICK: Duration = Duration::from_secs(30);

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn data_dir_env(dir: &TempDir) -> (String, String) {
    ("CONCLAVE_DATA_DIR".to_owned(), dir.path().to_string_lossy().into_owned())
}

#[tokio::test]
async fn version_and_help() -> Result<()> {
    let out = run_cli(&["--version"], &[], QUICK).await?;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "--version prints the version: {out}");

    let out = run_cli(&["--help"], &[], QUICK).await?;
    assert!(out.status.success(), "{out}");
    for command in ["serve", "migrate", "check-config", "admin"] {
        assert!(out.stdout.contains(command), "--help lists `{command}`: {out}");
    }
    Ok(())
}

/// The production report names the variable that fixes each finding.
#[tokio::test]
async fn check_config_reports_unsafe_production_settings() -> Result<()> {
    let dir = TempDir::new()?;
    let mut production = env(&[("CONCLAVE_PROFILE", "production")]);
    production.push(data_dir_env(&dir));

    let out = run_cli(&["check-config"], &production, QUICK).await?;
    assert!(!out.status.success(), "unsafe production defaults must fail check-config: {out}");
    let report = out.all();
    for var in
        ["CONCLAVE_PROVIDER_BASE_URL", "CONCLAVE_KEY_PROVIDER", "CONCLAVE_TRUSTED_PROXIES", "CONCLAVE_OIDC_ISSUER"]
    {
        assert!(report.contains(var), "the report should name {var}: {out}");
    }

    // Wildcard CORS and open sign-up each add a finding. The report may list every setting, so
    // count mentions rather than look for the first one.
    let mut worse = production.clone();
    worse.extend(env(&[("CONCLAVE_CORS_ORIGINS", "*"), ("CONCLAVE_SIGNUP", "open")]));
    let worse_out = run_cli(&["check-config"], &worse, QUICK).await?;
    assert!(!worse_out.status.success(), "{worse_out}");
    let worse_report = worse_out.all();
    for var in ["CONCLAVE_CORS_ORIGINS", "CONCLAVE_SIGNUP"] {
        assert!(
            worse_report.matches(var).count() > report.matches(var).count(),
            "setting {var} unsafely should add a finding naming it:\n{worse_out}\n--- without it ---\n{out}"
        );
    }
    assert!(worse_report.contains("CONCLAVE_PROVIDER_BASE_URL"), "{worse_out}");

    // Dev defaults are fine.
    let dev_dir = TempDir::new()?;
    let out = run_cli(&["check-config"], &[data_dir_env(&dev_dir)], QUICK).await?;
    assert!(out.status.success(), "check-config in dev with defaults passes: {out}");
    Ok(())
}

#[tokio::test]
async fn serve_refuses_unsafe_production_defaults() -> Result<()> {
    let dir = TempDir::new()?;
    let mut production = env(&[("CONCLAVE_PROFILE", "production")]);
    production.push(data_dir_env(&dir));
    let out = run_cli(&["serve"], &production, QUICK).await?;
    assert!(!out.status.success(), "serve must refuse unsafe production settings: {out}");
    assert!(out.all().contains("CONCLAVE_"), "the refusal names what to set: {out}");
    assert!(!out.all().contains("\"listening\""), "it must not have listened: {out}");
    Ok(())
}

#[tokio::test]
async fn serve_fails_fast_without_its_database() -> Result<()> {
    let dir = TempDir::new()?;
    let mut vars = env(&[("CONCLAVE_DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")]);
    vars.push(data_dir_env(&dir));
    let started = std::time::Instant::now();
    let out = run_cli(&["serve"], &vars, Duration::from_secs(20)).await?;
    assert!(!out.status.success(), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?} to give up", started.elapsed());
    assert!(out.all().to_lowercase().contains("database"), "the error mentions the database: {out}");
    Ok(())
}

async fn migrate_is_idempotent(backend: Backend) -> Result<()> {
    let site = Site::new(backend).await?;
    for run in 0..2 {
        let out = run_cli(&["migrate"], &site.env(), Duration::from_secs(60)).await?;
        assert!(out.status.success(), "migrate run {run}: {out}");
    }
    // And the server starts on the migrated site.
    let app = TestApp::builder(backend).site(site).start().await?;
    app.get("/readyz").fetch().await?.expect(200);
    app.admin().await?;
    Ok(())
}

/// Candidate passwords in the command's output: JSON fields, or long tokens on a line.
fn password_candidates(out: &CliOutput) -> Vec<String> {
    let mut found = Vec::new();
    for line in out.all().lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            for key in ["temporary_password", "password"] {
                if let Some(p) = v.get(key).or_else(|| v.get("fields").and_then(|f| f.get(key))).and_then(Value::as_str)
                {
                    found.push(p.to_owned());
                }
            }
            continue;
        }
        for word in line.split(|c: char| c.is_whitespace() || "\"'`,;".contains(c)) {
            if word.len() >= 12 && !word.contains('@') && !word.starts_with("CONCLAVE_") {
                found.push(word.to_owned());
            }
        }
    }
    found
}

async fn admin_create_prints_a_temporary_password(backend: Backend) -> Result<()> {
    let site = Site::new(backend).await?;
    let args = ["admin", "create", "--email", "root@example.test", "--display-name", "Root"];
    let out = run_cli(&args, &site.env(), Duration::from_secs(60)).await?;
    assert!(out.status.success(), "{out}");
    let candidates = password_candidates(&out);
    assert!(!candidates.is_empty(), "no temporary password printed: {out}");

    // The same address twice is refused.
    let again = run_cli(&args, &site.env(), Duration::from_secs(60)).await?;
    assert!(!again.status.success(), "a second admin with the same email must fail: {again}");

    let app = TestApp::builder(backend).site(site).start().await?;
    let mut signed_in = None;
    for candidate in &candidates {
        let resp = app
            .post("/api/v1/auth/login")
            .json(&serde_json::json!({"email": "root@example.test", "password": candidate}))
            .fetch()
            .await?;
        if resp.status == 200 {
            signed_in = Some((candidate.clone(), resp));
            break;
        }
    }
    let (password, resp) = signed_in.unwrap_or_else(|| panic!("none of {candidates:?} signs in: {out}"));
    assert_eq!(resp["user"]["role"], "admin");
    let token = resp["access_token"].as_str().unwrap_or_default();
    let me = app.get("/api/v1/me").bearer_auth(token).fetch().await?.expect(200);
    assert_eq!(me["must_change_password"], true);
    assert_eq!(me["display_name"], "Root");
    // The password is shown once: it is not in the server's logs.
    let logs = app.logs().join("\n");
    assert!(!logs.contains(&password), "the temporary password appears in the server log");
    Ok(())
}

backend_tests!(migrate_is_idempotent, admin_create_prints_a_temporary_password);
