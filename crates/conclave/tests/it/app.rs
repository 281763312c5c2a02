//! The harness: spawns the real `conclave` binary on a free port with its own data folder (and, on
//! PostgreSQL, its own database) and talks HTTP to it the way any client would.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use conclave_mock_provider::{MockProvider, Script};
use reqwest::header::{HeaderMap, CONTENT_TYPE, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{json, Value};

/// A password every strength check accepts.
pub const PASSWORD: &str = "correct-horse-battery-staple-42";
/// A second strong password, for changes and resets.
pub const OTHER_PASSWORD: &str = "violet-tugboat-orchestra-1987";
/// The key the harness gives the server for the mock provider.
pub const PROVIDER_KEY: &str = "test-key";
/// Where the PostgreSQL variant of every test creates its database.
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_BASE_URL: &str = "postgres://postgres@127.0.0.1:5432";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Environment every server and CLI run gets, before the test's own additions.
fn base_env() -> Vec<(String, String)> {
    [
        ("CONCLAVE_PROFILE", "dev"),
        ("CONCLAVE_LISTEN", "127.0.0.1:0"),
        ("CONCLAVE_PASSWORD_HASH_MEMORY_KIB", "256"),
        ("CONCLAVE_PASSWORD_HASH_ITERATIONS", "1"),
        ("CONCLAVE_LOG", "info"),
        // Scenarios make more than the default 100 requests a minute from one address.
        ("CONCLAVE_RATE_LIMIT_PER_MINUTE", "100000"),
        ("CONCLAVE_LOGIN_ATTEMPTS_PER_MINUTE", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The binary with every `CONCLAVE_*` variable of the parent removed and `env` applied in order.
fn conclave_command(env: &[(String, String)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CONCLAVE_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null());
    cmd
}

/// A folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("conclave-it-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh PostgreSQL database, dropped (best effort) on drop.
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Result<Self> {
        use sqlx::Connection;
        let name = format!("conclave_it_{}", uuid::Uuid::new_v4().simple());
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow!(
                "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is needed by the postgres \
                 variant of this test and could not be used: {e}"
            )
        };
        let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(PG_ADMIN_URL))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.map_err(|e| unreachable(&e))?;
        let _ = conn.close().await;
        Ok(Self { name })
    }

    pub fn url(&self) -> String {
        format!("{PG_BASE_URL}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                let connect = sqlx::PgConnection::connect(PG_ADMIN_URL);
                if let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Where a server keeps its state: a data folder and, on PostgreSQL, a database. Outlives one
/// server process so that CLI commands and restarts can share it.
pub struct Site {
    dir: TempDir,
    pg: Option<PgDatabase>,
}

impl Site {
    pub async fn new(backend: Backend) -> Result<Self> {
        let dir = TempDir::new()?;
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await?),
        };
        Ok(Self { dir, pg })
    }

    /// The variables that point a process at this site.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("CONCLAVE_DATA_DIR".to_owned(), self.dir.path().to_string_lossy().into_owned())];
        if let Some(pg) = &self.pg {
            env.push(("CONCLAVE_DATABASE_URL".to_owned(), pg.url()));
        }
        env
    }
}

/// The result of running the binary as a command.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Both streams, for assertions that do not care which one a message went to.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `conclave <args>` with the base environment plus `env`; fails if it runs longer than
/// `timeout` (the child is killed).
pub async fn run_cli(args: &[&str], env: &[(String, String)], timeout: Duration) -> Result<CliOutput> {
    let mut full = base_env();
    full.extend(env.iter().cloned());
    let mut cmd = tokio::process::Command::from(conclave_command(&full));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().context("spawning conclave")?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("`conclave {}` still running after {timeout:?}", args.join(" ")))??;
    Ok(CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

pub struct TestAppBuilder {
    backend: Backend,
    site: Option<Site>,
    env: Vec<(String, String)>,
    /// The site of another running server, shared rather than owned (a second replica).
    shared_site: Option<Vec<(String, String)>>,
    /// Talk HTTPS, trusting this CA (PEM) only.
    tls_root: Option<String>,
}

impl TestAppBuilder {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Points the server at `mock` as its OpenAI-compatible provider.
    pub fn provider(self, mock: &MockProvider) -> Self {
        self.env("CONCLAVE_PROVIDER_BASE_URL", mock.base_url())
            .env("CONCLAVE_PROVIDER_API_KEY", PROVIDER_KEY)
            .env("CONCLAVE_MODELS", "mock-model,mock-large")
    }

    /// Runs on an existing site (after a CLI command or a previous server) instead of a new one.
    pub fn site(mut self, site: Site) -> Self {
        self.site = Some(site);
        self
    }

    /// Runs as another replica of `other`: the same data folder (so the same local key) and, on
    /// PostgreSQL, the same database. `other` must outlive this server, which owns nothing.
    pub fn alongside(mut self, other: &TestApp) -> Self {
        self.shared_site = Some(other.site_env.clone());
        self
    }

    /// The server speaks HTTPS (configured by the test's `CONCLAVE_TLS_*` variables): the
    /// client trusts `root_pem` and nothing else.
    pub fn https(mut self, root_pem: &str) -> Self {
        self.tls_root = Some(root_pem.to_owned());
        self
    }

    pub async fn start(self) -> Result<TestApp> {
        let (site, site_env) = match (self.site, self.shared_site) {
            (_, Some(shared)) => (None, shared),
            (Some(site), None) => {
                let env = site.env();
                (Some(site), env)
            }
            (None, None) => {
                let site = Site::new(self.backend).await?;
                let env = site.env();
                (Some(site), env)
            }
        };
        let mut env = base_env();
        env.extend(site_env.iter().cloned());
        env.extend(self.env);

        let mut cmd = conclave_command(&env);
        cmd.arg("serve").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning `conclave serve`")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        pump(stdout, "", logs.clone(), Some(tx));
        pump(stderr, "[stderr] ", logs.clone(), None);

        // The reader thread sends the address, or hangs up when the process closes its stdout.
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60))).await?;
        let addr = match waited {
            Ok(addr) => addr,
            Err(e) => {
                let e = match e {
                    mpsc::RecvTimeoutError::Timeout => "nothing within 60 s",
                    mpsc::RecvTimeoutError::Disconnected => "its output ended first",
                };
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!(
                    "`conclave serve` did not log its \"listening\" line ({e}; exit: {status:?}).\n\
                     Output:\n{logs}"
                );
            }
        };
        let tls_root = self.tls_root;
        let client = client(tls_root.as_deref(), None)?;
        let scheme = if tls_root.is_some() { "https" } else { "http" };
        Ok(TestApp {
            addr,
            base: format!("{scheme}://{addr}"),
            client,
            child: Some(child),
            logs,
            site,
            site_env,
            tls_root,
        })
    }
}

/// A client for the harness: plain, or trusting only `tls_root` and presenting `identity` (PEM
/// certificate and key) when given.
fn client(tls_root: Option<&str>, identity: Option<&str>) -> Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60));
    if let Some(root) = tls_root {
        builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes())?)
            .tls_info(true);
    }
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes())?);
    }
    Ok(builder.build()?)
}

/// Copies a stream of the child into `logs` line by line; on stdout, reports the listening address.
fn pump(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    logs: Arc<Mutex<Vec<String>>>,
    mut listening: Option<mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let addr = listening.as_ref().and_then(|_| listening_addr(&line));
            // Logged before the address is handed over, so the test sees the line once started.
            if let Ok(mut logs) = logs.lock() {
                logs.push(format!("{prefix}{line}"));
            }
            if let (Some(addr), Some(tx)) = (addr, listening.take_if(|_| addr.is_some())) {
                let _ = tx.send(addr);
            }
        }
    });
}

/// The address in the "listening" log line. Lenient about where the fields sit so that one layout
/// slip does not fail every test; `health::listening_line_follows_the_contract` checks the layout.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    let pick = |key: &str| {
        v.get(key).or_else(|| v.get("fields").and_then(|f| f.get(key))).and_then(Value::as_str).map(str::to_owned)
    };
    let msg = pick("msg").or_else(|| pick("message"))?;
    if msg != "listening" {
        return None;
    }
    pick("addr")?.parse().ok()
}

/// One running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    site: Option<Site>,
    /// The variables pointing at its site, owned or shared.
    site_env: Vec<(String, String)>,
    /// The CA the client trusts, when the server speaks HTTPS.
    tls_root: Option<String>,
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder { backend, site: None, env: Vec::new(), shared_site: None, tls_root: None }
    }

    /// A server with no provider configured (the built-in demo model in dev).
    pub async fn start(backend: Backend) -> Result<Self> {
        Self::builder(backend).start().await
    }

    /// A server wired to a fresh mock provider that answers "echo: <last user message>" and only
    /// accepts the harness's provider key.
    pub async fn with_mock(backend: Backend) -> Result<(Self, MockProvider)> {
        let mock = start_mock().await?;
        let app = Self::builder(backend).provider(&mock).start().await?;
        Ok((app, mock))
    }

    /// The value of one of the variables that point this process at its site
    /// (`CONCLAVE_DATA_DIR`, `CONCLAVE_DATABASE_URL`).
    pub fn site_var(&self, name: &str) -> Option<String> {
        self.site_env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// A new HTTPS client (new connections) that presents `identity` (PEM certificate and key).
    pub fn tls_client(&self, identity: Option<&str>) -> Result<reqwest::Client> {
        client(Some(self.tls_root.as_deref().context("this server was not started with https()")?), identity)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }
    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path))
    }
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(self.url(path))
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// What the server printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM, as a process manager would.
    pub fn terminate(&self) -> Result<()> {
        let status = std::process::Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        Ok(())
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("no child process")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the server was still running {timeout:?} after being asked to stop");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGKILL) and hands back its site, for a restart or a CLI command.
    pub fn into_site(mut self) -> Site {
        self.kill();
        self.site.take().expect("site present until drop")
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn sigkill(&mut self) {
        self.kill();
    }

    /// Freezes the process (SIGSTOP), as a paused VM or a starved container would be.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Asks the server to read its TLS certificate again (SIGHUP).
    pub fn hangup(&self) -> Result<()> {
        self.signal("-HUP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> Result<()> {
        let status = std::process::Command::new("kill").arg(which).arg(self.pid().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {which} failed: {status}");
        Ok(())
    }

    /// The resident memory of the server process (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    // --- accounts ---

    /// Signs up and checks the 201 answer and its refresh cookie.
    pub async fn signup(&self, email: &str, password: &str, name: &str) -> Result<Session> {
        let resp = self
            .post("/api/v1/auth/signup")
            .json(&json!({"email": email, "password": password, "display_name": name}))
            .fetch()
            .await?
            .expect(201);
        Session::from_auth_response(&resp, email, password)
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Session> {
        let resp = self
            .post("/api/v1/auth/login")
            .json(&json!({"email": email, "password": password}))
            .fetch()
            .await?
            .expect(200);
        Session::from_auth_response(&resp, email, password)
    }

    /// The first account of a fresh server: the tenant's admin.
    pub async fn admin(&self) -> Result<Session> {
        let s = self.signup("admin@example.test", PASSWORD, "Ada Admin").await?;
        assert_eq!(s.user["role"], "admin", "the first account should be the admin: {}", s.user);
        Ok(s)
    }

    /// A further account (`<name>@example.test`), a member.
    pub async fn member(&self, name: &str) -> Result<Session> {
        let s = self.signup(&format!("{name}@example.test"), PASSWORD, name).await?;
        assert_eq!(s.user["role"], "member", "later accounts should be members: {}", s.user);
        Ok(s)
    }

    // --- resources ---

    /// Creates an agent from sensible defaults overridden by `fields`.
    pub async fn create_agent(&self, token: &str, fields: Value) -> Result<Value> {
        let mut body = json!({
            "name": "Helper",
            "instructions": "You are a helpful assistant.",
            "model": "mock-model",
        });
        merge(&mut body, fields);
        let resp = self.post("/api/v1/agents").bearer_auth(token).json(&body).fetch().await?.expect(201);
        Ok(resp.body)
    }

    pub async fn create_conversation(&self, token: &str, agent_id: &Value, title: Option<&str>) -> Result<Value> {
        let mut body = json!({"agent_id": agent_id});
        if let Some(t) = title {
            body["title"] = json!(t);
        }
        let resp = self.post("/api/v1/conversations").bearer_auth(token).json(&body).fetch().await?.expect(201);
        Ok(resp.body)
    }

    /// Uploads `content` as the multipart part `file` named `name` into a library; the raw answer.
    pub async fn upload(
        &self,
        token: &str,
        library: &str,
        name: &str,
        content_type: &str,
        content: &[u8],
    ) -> Result<Resp> {
        let (boundary, body) = multipart(name, content_type, content);
        self.post(&format!("/api/v1/libraries/{library}/documents"))
            .bearer_auth(token)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .fetch()
            .await
    }

    /// Posts a message (non-streamed) and returns the raw answer.
    pub async fn post_message(&self, token: &str, conversation_id: &Value, content: &str) -> Result<Resp> {
        self.post(&format!("/api/v1/conversations/{}/messages", s(conversation_id)))
            .bearer_auth(token)
            .json(&json!({"content": content}))
            .fetch()
            .await
    }

    /// Posts a message with `stream: true` and checks that the answer is an event stream.
    pub async fn post_streamed(&self, token: &str, conversation_id: &Value, content: &str) -> Result<EventStream> {
        let req = self
            .post(&format!("/api/v1/conversations/{}/messages", s(conversation_id)))
            .bearer_auth(token)
            .json(&json!({"content": content, "stream": true}));
        EventStream::open(req).await
    }

    /// Re-attaches to a reply's events, resuming after `last_event_id` when given.
    pub async fn reply_events(
        &self,
        token: &str,
        conversation_id: &Value,
        reply_id: &Value,
        last_event_id: Option<&str>,
    ) -> Result<EventStream> {
        let mut req = self
            .get(&format!("/api/v1/conversations/{}/messages/{}/events", s(conversation_id), s(reply_id)))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        EventStream::open(req).await
    }

    pub async fn cancel_reply(&self, token: &str, conversation_id: &Value, reply_id: &Value) -> Result<Resp> {
        self.post(&format!("/api/v1/conversations/{}/messages/{}/cancel", s(conversation_id), s(reply_id)))
            .bearer_auth(token)
            .fetch()
            .await
    }

    /// One message of a conversation, from the listing.
    pub async fn message(&self, token: &str, conversation_id: &Value, id: &Value) -> Result<Value> {
        let all = self.messages(token, conversation_id).await?;
        all.into_iter().find(|m| m["id"] == *id).with_context(|| format!("message {id} is not listed"))
    }

    /// Polls a reply until it is no longer `streaming`, and returns it.
    pub async fn wait_for_reply(
        &self,
        token: &str,
        conversation_id: &Value,
        id: &Value,
        within: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.message(token, conversation_id, id).await?;
            if m["status"] != "streaming" {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!("reply {id} still `streaming` after {within:?}: {m}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs up the admin and opens a conversation with an agent on `mock-model`.
    pub async fn admin_conversation(&self) -> Result<(Session, Value)> {
        let admin = self.admin().await?;
        let agent = self.create_agent(&admin.token, json!({})).await?;
        let conv = self.create_conversation(&admin.token, &agent["id"], None).await?;
        Ok((admin, conv["id"].clone()))
    }

    /// Every message of a conversation, following cursors.
    pub async fn messages(&self, token: &str, conversation_id: &Value) -> Result<Vec<Value>> {
        self.collect(&format!("/api/v1/conversations/{}/messages", s(conversation_id)), token, 50).await
    }

    /// Walks a paginated list with `limit`, checking each page, and returns all items in order.
    pub async fn collect(&self, path: &str, token: &str, limit: u32) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..200 {
            let mut req = self.get(path).bearer_auth(token).query(&[("limit", limit.to_string())]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c)]);
            }
            let page = req.fetch().await?.expect(200);
            let batch = page.body["items"]
                .as_array()
                .with_context(|| format!("GET {path}: no items array in {}", page.body))?;
            assert!(batch.len() <= limit as usize, "GET {path}: page larger than limit {limit}: {}", page.body);
            items.extend(batch.iter().cloned());
            match &page.body["next_cursor"] {
                Value::Null => return Ok(items),
                Value::String(c) => {
                    assert!(!batch.is_empty(), "GET {path}: empty page with a next_cursor");
                    cursor = Some(c.clone());
                }
                other => bail!("GET {path}: next_cursor is neither null nor a string: {other}"),
            }
        }
        bail!("GET {path}: more than 200 pages")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
        // Captured by the test runner: shown only when the test fails.
        let logs = self.logs();
        let skip = logs.len().saturating_sub(200);
        eprintln!("--- conclave output (last {} lines) ---", logs.len() - skip);
        for line in &logs[skip..] {
            eprintln!("{line}");
        }
    }
}

/// The resident memory (VmRSS) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().context("VmRSS value")
}

/// A mock provider with the default script: echo, and only the harness's key accepted.
pub async fn start_mock() -> Result<MockProvider> {
    let mock = MockProvider::start().await?;
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY));
    Ok(mock)
}

/// A signed-in account.
pub struct Session {
    pub token: String,
    /// The `conclave_refresh` cookie value.
    pub cookie: String,
    pub user: Value,
    pub email: String,
    pub password: String,
}

impl Session {
    fn from_auth_response(resp: &Resp, email: &str, password: &str) -> Result<Self> {
        let token =
            resp.body["access_token"].as_str().with_context(|| format!("no access_token in {}", resp.body))?.to_owned();
        let cookie =
            resp.refresh_cookie().with_context(|| format!("no conclave_refresh cookie set by {}", resp.what))?;
        Ok(Self {
            token,
            cookie,
            user: resp.body["user"].clone(),
            email: email.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The value for a `Cookie` header carrying this session's refresh token.
    pub fn cookie_header(&self) -> String {
        format!("conclave_refresh={}", self.cookie)
    }
}

/// An HTTP answer, read whole.
/// A multipart/form-data body with one part `file`: (boundary, bytes).
pub fn multipart(name: &str, content_type: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "conclave-test-boundary-41c2".to_owned();
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body parsed as JSON, or `Null`.
    pub body: Value,
}

impl std::ops::Index<&str> for Resp {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        &self.body[key]
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The whole `Set-Cookie` line for the refresh cookie.
    pub fn refresh_set_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.trim_start().starts_with("conclave_refresh="))
            .map(str::to_owned)
    }

    /// The refresh cookie's value, when it sets a non-empty one.
    pub fn refresh_cookie(&self) -> Option<String> {
        let line = self.refresh_set_cookie()?;
        let value = line.trim_start().trim_start_matches("conclave_refresh=").split(';').next()?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}: expected {status}, got {}: {}", self.what, self.status, self.text);
        self
    }

    /// Checks an RFC 9457 problem with this status, its `request_id` matching the header.
    #[track_caller]
    pub fn problem(self, status: u16) -> Self {
        let this = self.expect(status);
        this.assert_problem_shape();
        this
    }

    /// Checks that the answer is a problem of some status in `allowed` (never 500).
    #[track_caller]
    pub fn problem_in(self, allowed: &[u16]) -> Self {
        assert!(
            allowed.contains(&self.status),
            "{}: expected one of {allowed:?}, got {}: {}",
            self.what,
            self.status,
            self.text
        );
        self.assert_problem_shape();
        self
    }

    #[track_caller]
    fn assert_problem_shape(&self) {
        let ct = self.header(CONTENT_TYPE.as_str()).unwrap_or_default();
        assert!(
            ct.starts_with("application/problem+json"),
            "{}: content-type {ct:?} is not application/problem+json: {}",
            self.what,
            self.text
        );
        for key in ["type", "title", "detail", "request_id"] {
            assert!(self.body[key].is_string(), "{}: problem without string `{key}`: {}", self.what, self.text);
        }
        assert_eq!(self.body["status"], json!(self.status), "{}: problem status field: {}", self.what, self.text);
        let header = self.header("x-request-id");
        assert_eq!(
            self.body["request_id"].as_str(),
            header.as_deref(),
            "{}: request_id differs from the x-request-id header",
            self.what
        );
        if self.status == 401 {
            let auth = self.header(WWW_AUTHENTICATE.as_str()).unwrap_or_default();
            assert!(auth.starts_with("Bearer"), "{}: 401 without `WWW-Authenticate: Bearer` (got {auth:?})", self.what);
        }
    }

    /// A 422 problem whose `errors` name `field` (exactly, or an element or member of it).
    #[track_caller]
    pub fn invalid(self, field: &str) -> Self {
        let this = self.problem(422);
        let fields = this.error_fields();
        assert!(
            fields
                .iter()
                .any(|f| f == field || f.starts_with(&format!("{field}[")) || f.starts_with(&format!("{field}."))),
            "{}: 422 does not name field {field:?} (fields: {fields:?}): {}",
            this.what,
            this.text
        );
        this
    }

    /// What keeps this answer from being a 422 problem naming `field`, if anything. For loops over
    /// many cases that should report every miss, not just the first.
    pub fn invalid_miss(&self, field: &str) -> Option<String> {
        let ct = self.header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let fields = self.error_fields();
        let named = fields
            .iter()
            .any(|f| f == field || f.starts_with(&format!("{field}[")) || f.starts_with(&format!("{field}.")));
        if self.status == 422 && ct.starts_with("application/problem+json") && named {
            None
        } else {
            Some(format!(
                "{}: expected a 422 problem naming {field:?}, got {} with fields {fields:?}: {}",
                self.what, self.status, self.text
            ))
        }
    }

    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errs| errs.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The `items` of a list answer.
    pub fn items(&self) -> Vec<Value> {
        self.body["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Sends a request and reads the whole answer.
#[allow(async_fn_in_trait)]
pub trait Fetch {
    async fn fetch(self) -> Result<Resp>;
}

impl Fetch for reqwest::RequestBuilder {
    async fn fetch(self) -> Result<Resp> {
        let (client, req) = self.build_split();
        let req = req?;
        let what = format!(
            "{} {}{}",
            req.method(),
            req.url().path(),
            req.url().query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let resp = client.execute(req).await.with_context(|| format!("sending {what}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.with_context(|| format!("reading the body of {what}"))?;
        // No request in this suite may make the server fail internally, whatever the test expects.
        anyhow::ensure!(status != 500, "{what} answered 500: {text}");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { what, status, headers, text, body })
    }
}

/// A JSON value as a plain string (ids in paths).
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `id` fields of a list of objects.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| s(&i["id"])).collect()
}

/// Shallow merge of `extra`'s members into `base`.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// Whether `v` is an RFC 3339 UTC timestamp such as `2025-01-02T03:04:05Z` or `...+00:00`.
pub fn is_utc_timestamp(v: &Value) -> bool {
    let Some(t) = v.as_str() else { return false };
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && (t.ends_with('Z') || t.ends_with('z') || t.ends_with("+00:00"))
}

/// One Server-Sent Event as the client sees it.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The `id:` as a number: the contract makes ids decimal byte offsets into the reply.
    pub fn offset(&self) -> Option<usize> {
        self.id.as_deref().and_then(|id| id.parse().ok())
    }

    pub fn is_end(&self) -> bool {
        self.event == "done" || self.event == "error"
    }
}

impl std::fmt::Display for SseEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data: String = self.data.chars().take(300).collect();
        write!(f, "event: {} id: {:?} data: {data}", self.event, self.id)
    }
}

/// An open `text/event-stream` answer, read event by event. Dropping it closes the connection.
pub struct EventStream {
    pub what: String,
    pub headers: HeaderMap,
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Comment lines seen (`: ping`).
    pub comments: Vec<String>,
    /// The body ended.
    pub closed: bool,
    /// How far `buf` is known to hold no blank line.
    scanned: usize,
}

/// How long one event may take to arrive unless a test says otherwise.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

impl EventStream {
    /// Sends the request and checks for `200 text/event-stream`.
    pub async fn open(req: reqwest::RequestBuilder) -> Result<Self> {
        let (client, req) = req.build_split();
        let req = req?;
        let what = format!("{} {}", req.method(), req.url().path());
        let resp = client.execute(req).await.with_context(|| format!("sending {what}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            bail!("{what}: expected a 200 event stream, got {status}: {text}");
        }
        let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        anyhow::ensure!(ct.starts_with("text/event-stream"), "{what}: content-type {ct:?}, not text/event-stream");
        Ok(Self { what, headers, resp, buf: Vec::new(), comments: Vec::new(), closed: false, scanned: 0 })
    }

    /// The next event, or `None` once the body ended; fails after `within` without one.
    pub async fn next_within(&mut self, within: Duration) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one()? {
                return Ok(Some(event));
            }
            if self.closed {
                anyhow::ensure!(
                    self.buf.iter().all(|b| b.is_ascii_whitespace()),
                    "{}: the body ended inside an event: {:?}",
                    self.what,
                    String::from_utf8_lossy(&self.buf)
                );
                return Ok(None);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .map_err(|_| anyhow!("{}: no event within {within:?}", self.what))?
                .with_context(|| format!("{}: reading the event stream", self.what))?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => self.closed = true,
            }
        }
    }

    pub async fn next(&mut self) -> Result<Option<SseEvent>> {
        self.next_within(EVENT_TIMEOUT).await
    }

    /// The next event, failing if the stream ended.
    pub async fn expect_event(&mut self) -> Result<SseEvent> {
        self.next().await?.with_context(|| format!("{}: the stream ended early", self.what))
    }

    /// Every event up to and including the first `done` or `error`, then checks that the body
    /// ends there.
    pub async fn until_end(&mut self, within: Duration) -> Result<Vec<SseEvent>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_within(left).await.with_context(|| format!("after {} events", events.len()))?
            else {
                bail!("{}: the stream ended without done or error after {} events", self.what, events.len());
            };
            let end = event.is_end();
            events.push(event);
            if end {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(2));
                if let Some(extra) = self.next_within(left).await? {
                    bail!("{}: an event after the end: {extra}", self.what);
                }
                return Ok(events);
            }
        }
    }

    /// One whole event from the buffer, skipping blocks that only hold comments.
    fn parse_one(&mut self) -> Result<Option<SseEvent>> {
        loop {
            let from = self.scanned.saturating_sub(3);
            let Some((end, sep)) = find_blank_line(&self.buf[from..]).map(|(i, n)| (from + i, n)) else {
                self.scanned = self.buf.len();
                return Ok(None);
            };
            let block: Vec<u8> = self.buf.drain(..end + sep).collect();
            self.scanned = 0;
            let block =
                std::str::from_utf8(&block[..end]).with_context(|| format!("{}: event not UTF-8", self.what))?;
            let mut event = None;
            let mut id = None;
            let mut data: Option<String> = None;
            for line in block.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
                if let Some(comment) = line.strip_prefix(':') {
                    self.comments.push(comment.trim().to_owned());
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
            if event.is_none() && id.is_none() && data.is_none() {
                continue;
            }
            return Ok(Some(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                id,
                data: data.unwrap_or_default(),
            }));
        }
    }
}

/// Where the first blank line (end of an event) is: its start and the separator's length.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}
