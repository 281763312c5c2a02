//! `conclave backup` and `conclave restore`: a backup taken while the server runs holds the
//! database and the document objects, sealed as they are and without the master key; it restores
//! into an empty data folder with the key file, and is refused without it, after the version that
//! wrapped its keys was retired, or when a file in it was altered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{run_cli, s, Backend, CliOutput, TempDir, TestApp};
use crate::encryption::walk;

const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// A site with a library holding one document and a titled conversation, both carrying `marker`.
struct Seeded {
    app: TestApp,
    email: String,
    password: String,
    document: String,
    content: Vec<u8>,
}

async fn seeded(marker: &str) -> Result<Seeded> {
    let app = TestApp::start(Backend::Sqlite).await?;
    let admin = app.admin().await?;
    let library = app
        .post("/api/v1/libraries")
        .bearer_auth(&admin.token)
        .json(&json!({"name": format!("Matter {marker}")}))
        .send()
        .await?;
    assert_eq!(library.status(), 201);
    let library: Value = library.json().await?;
    let content = format!("Privileged memo {marker}\n").repeat(40_000).into_bytes();
    let document = app.upload(&admin.token, &s(&library["id"]), "memo.txt", "text/plain", &content).await?.expect(201);
    let agent = app.create_agent(&admin.token, json!({"model": "conclave-demo", "name": "Counsel"})).await?;
    app.create_conversation(&admin.token, &agent["id"], Some(&format!("Title {marker}"))).await?;
    Ok(Seeded {
        email: admin.email.clone(),
        password: admin.password.clone(),
        document: s(&document.body["id"]),
        content,
        app,
    })
}

fn data_env(data: &Path, key_file: Option<&Path>) -> Vec<(String, String)> {
    let mut env = vec![("CONCLAVE_DATA_DIR".to_owned(), data.display().to_string())];
    if let Some(key) = key_file {
        env.push(("CONCLAVE_KEY_FILE".to_owned(), key.display().to_string()));
    }
    env
}

async fn cli(args: &[&str], env: &[(String, String)]) -> Result<CliOutput> {
    run_cli(args, env, CLI_TIMEOUT).await
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_backup_restores_with_its_key_file_and_holds_no_key_or_clear_text() -> Result<()> {
    let marker = format!("BACKUP-{}", uuid::Uuid::new_v4().simple());
    let seeded = seeded(&marker).await?;
    let data = PathBuf::from(seeded.app.site_var("CONCLAVE_DATA_DIR").expect("a data folder"));
    let key_file = data.join("keys").join("conclave-kek.json");
    let site = data_env(&data, None);
    let scratch = TempDir::new()?;
    let backup = scratch.path().join("backup");

    // Taken while the server runs.
    let taken = cli(&["backup", &backup.display().to_string()], &site).await?;
    assert!(taken.status.success(), "{taken}");
    assert!(taken.stdout.contains("1 objects"), "{taken}");
    assert!(taken.stdout.contains("It holds no master key"), "{taken}");

    let manifest: Value = serde_json::from_slice(&std::fs::read(backup.join("manifest.json"))?)?;
    assert_eq!(manifest["format"], "conclave-backup/1");
    assert_eq!(manifest["master_key"]["provider"], "local");
    assert_eq!(manifest["objects"].as_array().map(Vec::len), Some(1));
    assert!(manifest["missing_objects"].as_array().is_some_and(Vec::is_empty));
    let mut files = 0;
    for path in walk(&backup) {
        files += 1;
        assert_ne!(path.file_name(), key_file.file_name(), "a backup never holds the key file");
        let bytes = std::fs::read(&path)?;
        assert!(!contains(&bytes, &marker), "{} shows the marker in clear", path.display());
    }
    assert!(files >= 3, "manifest, database and object");

    // Refusals that leave everything as it was.
    let again = cli(&["backup", &backup.display().to_string()], &site).await?;
    assert!(!again.status.success() && again.all().contains("is not empty"), "{again}");
    let inside = cli(&["backup", &data.join("backups").display().to_string()], &site).await?;
    assert!(!inside.status.success() && inside.all().contains("inside the data folder"), "{inside}");
    assert!(!data.join("backups").exists());

    // Deleted after the backup: gone from the live system, back from the backup.
    let admin = seeded.app.login(&seeded.email, &seeded.password).await?;
    let deleted =
        seeded.app.delete(&format!("/api/v1/documents/{}", seeded.document)).bearer_auth(&admin.token).send().await?;
    assert_eq!(deleted.status(), 204);
    let _site = seeded.app.into_site();

    let restored_site = TempDir::new()?;
    let restored_data = restored_site.path().join("data");
    let without_key = cli(&["restore", &backup.display().to_string()], &data_env(&restored_data, None)).await?;
    assert!(!without_key.status.success(), "{without_key}");
    assert!(without_key.all().contains("key file"), "the missing key file is named: {without_key}");
    assert!(!restored_data.join("conclave.db").exists(), "nothing restored without the key");
    assert!(!restored_data.join("keys").exists(), "no new key file was made for old keys");

    let env = data_env(&restored_data, Some(&key_file));
    let restored = cli(&["restore", &backup.display().to_string()], &env).await?;
    assert!(restored.status.success(), "{restored}");
    assert!(restored.stdout.contains("every key opens"), "{restored}");
    let twice = cli(&["restore", &backup.display().to_string()], &env).await?;
    assert!(!twice.status.success() && twice.all().contains("already exists"), "{twice}");

    let app = TestApp::builder(Backend::Sqlite)
        .env("CONCLAVE_DATA_DIR", restored_data.display().to_string())
        .env("CONCLAVE_KEY_FILE", key_file.display().to_string())
        .start()
        .await?;
    let admin = app.login(&seeded.email, &seeded.password).await?;
    let content =
        app.get(&format!("/api/v1/documents/{}/content", seeded.document)).bearer_auth(&admin.token).send().await?;
    assert_eq!(content.status(), 200);
    assert!(content.bytes().await?.as_ref() == seeded.content.as_slice(), "the document comes back whole");
    let conversations: Value = app.get("/api/v1/conversations").bearer_auth(&admin.token).send().await?.json().await?;
    assert_eq!(s(&conversations["items"][0]["title"]), format!("Title {marker}"));
    Ok(())
}

#[tokio::test]
async fn a_restore_refuses_an_altered_backup_and_keys_of_a_retired_version() -> Result<()> {
    let marker = format!("RETIRED-{}", uuid::Uuid::new_v4().simple());
    let seeded = seeded(&marker).await?;
    let data = PathBuf::from(seeded.app.site_var("CONCLAVE_DATA_DIR").expect("a data folder"));
    let key_file = data.join("keys").join("conclave-kek.json");
    let site = data_env(&data, None);
    let scratch = TempDir::new()?;
    let backup = scratch.path().join("before-rotation");
    let taken = cli(&["backup", &backup.display().to_string()], &site).await?;
    assert!(taken.status.success(), "{taken}");
    let _site = seeded.app.into_site();

    // One flipped bit in the object: refused before anything is written.
    let altered = scratch.path().join("altered");
    copy_tree(&backup, &altered)?;
    let object = walk(&altered.join("objects")).pop().expect("the object");
    let mut bytes = std::fs::read(&object)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes)?;
    let target = scratch.path().join("target");
    let env = data_env(&target, Some(&key_file));
    let refused = cli(&["restore", &altered.display().to_string()], &env).await?;
    assert!(!refused.status.success(), "{refused}");
    assert!(refused.all().contains("does not match its manifest"), "{refused}");
    assert!(!target.join("conclave.db").exists() && !target.join("objects").exists(), "nothing restored");

    // Rotate, then retire the version that wrapped the backup's keys: the backup is dead.
    let rotated = cli(&["keys", "rotate"], &site).await?;
    assert!(rotated.status.success(), "{rotated}");
    let retired = cli(&["keys", "retire", "--version", "1"], &site).await?;
    assert!(retired.status.success(), "{retired}");
    let refused = cli(&["restore", &backup.display().to_string()], &env).await?;
    assert!(!refused.status.success(), "{refused}");
    assert!(refused.all().contains("do not open with the configured master key"), "{refused}");
    assert!(refused.all().contains("retired"), "the reason is given: {refused}");
    assert!(!target.join("conclave.db").exists(), "nothing restored");
    assert!(
        std::fs::read_dir(&target)?.flatten().all(|e| !e.file_name().to_string_lossy().starts_with("conclave.db")),
        "no partial database is left behind"
    );
    Ok(())
}

#[tokio::test]
async fn backups_cover_the_embedded_database_only() -> Result<()> {
    let scratch = TempDir::new()?;
    let env = vec![
        ("CONCLAVE_DATA_DIR".to_owned(), scratch.path().join("data").display().to_string()),
        ("CONCLAVE_DATABASE_URL".to_owned(), "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    ];
    let out = cli(&["backup", &scratch.path().join("b").display().to_string()], &env).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.all().contains("pg_dump"), "{out}");
    let out = cli(&["restore", &scratch.path().display().to_string()], &env).await?;
    assert!(!out.status.success() && out.all().contains("not a Conclave backup"), "{out}");
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for file in walk(from) {
        let target = to.join(file.strip_prefix(from)?);
        std::fs::create_dir_all(target.parent().expect("a parent"))?;
        std::fs::copy(&file, &target)?;
    }
    Ok(())
}
