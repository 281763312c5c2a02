//! A private `redis-server` for tests (feature `testing`): its own port, nothing saved, and
//! optionally TLS with a CA made for it and an ACL user whose passwords the test sets, the way
//! Azure Cache for Redis takes Entra tokens (user: the identity's object id; password: a token).
//! An `admin` user on a plain loopback port lets the test change passwords and cut connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "private-redis-admin";

/// What the private Redis offers besides a plain port.
#[derive(Default)]
pub struct PrivateRedisOptions {
    /// An ACL user (all commands and keys) that starts with no password: sign-in is refused
    /// until [`PrivateRedis::add_password`]. The default user is then switched off.
    pub acl_user: Option<String>,
    /// A TLS port as well, with a certificate for 127.0.0.1 from a CA of its own.
    pub tls: bool,
}

pub struct PrivateRedis {
    child: Child,
    port: u16,
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    acl_user: Option<String>,
}

impl PrivateRedis {
    /// A plain Redis anyone on loopback may use.
    pub fn start() -> PrivateRedis {
        PrivateRedis::start_with(PrivateRedisOptions::default())
    }

    pub fn start_with(options: PrivateRedisOptions) -> PrivateRedis {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let mut config =
            format!("port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n", dir.path().display());
        let tls_port = options.tls.then(|| {
            write_certificates(dir.path());
            let tls_port = free_port();
            config.push_str(&format!(
                "tls-port {tls_port}\ntls-cert-file server.crt\ntls-key-file server.key\ntls-ca-cert-file ca.crt\ntls-auth-clients no\n"
            ));
            tls_port
        });
        if let Some(user) = &options.acl_user {
            config.push_str(&format!(
                "user default off\nuser admin on >{ADMIN_PASSWORD} ~* &* +@all\nuser {user} on resetpass ~* &* +@all\n"
            ));
        }
        let config_path = dir.path().join("redis.conf");
        std::fs::write(&config_path, config).expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; `make services` installs it) is needed");
        let redis = PrivateRedis { child, port, tls_port, dir, acl_user: options.acl_user };
        redis.wait_ready();
        redis
    }

    /// The plain URL (as `admin` when there is an ACL user).
    pub fn url(&self) -> String {
        match &self.acl_user {
            Some(_) => format!("redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The TLS URL with the ACL user's name and no password (the server under test adds its
    /// token), e.g. `rediss://oid@127.0.0.1:port`.
    pub fn tls_url_for_acl_user(&self) -> String {
        let port = self.tls_port.expect("started with tls");
        let user = self.acl_user.as_deref().expect("started with an ACL user");
        format!("rediss://{user}@127.0.0.1:{port}")
    }

    /// The CA that signed the TLS certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A connection of the test's own (as `admin` when there is an ACL user).
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url()).and_then(|c| c.get_connection()).expect("the private Redis answers")
    }

    /// One more password the ACL user may sign in with.
    pub fn add_password(&self, password: &str) {
        let user = self.acl_user.as_deref().expect("started with an ACL user");
        redis::cmd("ACL").arg("SETUSER").arg(user).arg(format!(">{password}")).exec(&mut self.admin()).unwrap();
    }

    /// From now on the ACL user signs in with `password` only, and every connection it had is
    /// cut (what Azure does when a token expires).
    pub fn only_password_and_cut(&self, password: &str) {
        let user = self.acl_user.as_deref().expect("started with an ACL user");
        let mut admin = self.admin();
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("resetpass")
            .arg(format!(">{password}"))
            .exec(&mut admin)
            .unwrap();
        redis::cmd("CLIENT").arg("KILL").arg("USER").arg(user).exec(&mut admin).unwrap();
    }

    /// How many connections the ACL user has open.
    pub fn connections_of_acl_user(&self) -> usize {
        let user = self.acl_user.as_deref().expect("started with an ACL user");
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut self.admin()).unwrap();
        list.lines().filter(|l| l.split(' ').any(|f| f == format!("user={user}"))).count()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private redis-server on port {} did not start", self.port);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn write_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Conclave private Redis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}
