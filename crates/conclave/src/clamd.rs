//! ClamAV's `clamd` as the document scanner (`CONCLAVE_CLAMD_ADDRESS`): the plaintext is sent with
//! `zINSTREAM` (chunks of at most 64 KiB, each behind its length as four big-endian bytes, then a
//! zero length) over TCP or a Unix socket, and the one-line answer is read back:
//! `stream: OK`, `stream: <name> FOUND`, or `... ERROR` (for one, a file over clamd's
//! `StreamMaxLength`, which then counts as not scanned: the upload is refused).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use conclave_core::scan::{ScanError, Scanner, Verdict};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHUNK: usize = 64 * 1024;
/// clamd's answers are one short line; anything longer is not one.
const MAX_REPLY: usize = 4096;

#[derive(Debug, Clone)]
enum Address {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Clamd {
    address: Address,
    timeout: Duration,
}

trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

impl Clamd {
    /// `host:port`, or `unix:` followed by a socket path; a whole scan must end within `timeout`.
    pub fn new(address: &str, timeout: Duration) -> anyhow::Result<Clamd> {
        let address = match address.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Address::Unix(PathBuf::from(path)),
            Some(_) => anyhow::bail!("CONCLAVE_CLAMD_ADDRESS: 'unix:' needs a socket path"),
            None if address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) => {
                Address::Tcp(address.to_owned())
            }
            None => anyhow::bail!("CONCLAVE_CLAMD_ADDRESS: '{address}' is neither host:port nor unix:/path"),
        };
        Ok(Clamd { address, timeout })
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Socket>> {
        Ok(match &self.address {
            Address::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
            Address::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }

    /// `PING` -> `PONG`: whether clamd answers.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let run = async {
            let mut socket = self.connect().await.map_err(io)?;
            socket.write_all(b"zPING\0").await.map_err(io)?;
            let reply = read_reply(&mut socket).await?;
            if reply == "PONG" {
                Ok(())
            } else {
                Err(ScanError(format!("clamd answered '{reply}' to PING")))
            }
        };
        tokio::time::timeout(Duration::from_secs(5), run).await.map_err(|_| ScanError("no answer within 5 s".into()))?
    }
}

fn io(e: std::io::Error) -> ScanError {
    ScanError(format!("clamd: {e}"))
}

async fn read_reply(socket: &mut Box<dyn Socket>) -> Result<String, ScanError> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = socket.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    let end = reply.iter().position(|&b| b == 0).unwrap_or(reply.len());
    Ok(String::from_utf8_lossy(&reply[..end]).trim().to_owned())
}

/// The verdict in clamd's answer to `INSTREAM`.
pub fn verdict(reply: &str) -> Result<Verdict, ScanError> {
    let body = reply.strip_prefix("stream:").map(str::trim).unwrap_or(reply);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(found) = body.strip_suffix(" FOUND") {
        return Ok(Verdict::Infected(found.trim().chars().take(200).collect()));
    }
    Err(ScanError(format!("clamd could not scan the file: {}", if reply.is_empty() { "no answer" } else { reply })))
}

#[async_trait::async_trait]
impl Scanner for Clamd {
    async fn scan(&self, mut content: BoxStream<'static, std::io::Result<Bytes>>) -> Result<Verdict, ScanError> {
        let run = async {
            let mut socket = self.connect().await.map_err(io)?;
            socket.write_all(b"zINSTREAM\0").await.map_err(io)?;
            let sent: Result<(), ScanError> = async {
                while let Some(chunk) = content.next().await {
                    let chunk = chunk.map_err(|e| ScanError(format!("reading the stored document: {e}")))?;
                    for piece in chunk.chunks(CHUNK) {
                        socket.write_all(&(piece.len() as u32).to_be_bytes()).await.map_err(io)?;
                        socket.write_all(piece).await.map_err(io)?;
                    }
                }
                socket.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
                socket.flush().await.map_err(io)
            }
            .await;
            // clamd hangs up early on a file over its size limit, after saying why: read that.
            let reply = read_reply(&mut socket).await;
            match (sent, reply) {
                (_, Ok(reply)) if !reply.is_empty() => verdict(&reply),
                (Err(e), _) | (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(_)) => Err(ScanError("clamd closed the connection without a verdict".into())),
            }
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| ScanError(format!("no verdict within {} s", self.timeout.as_secs())))?
    }

    fn describe(&self) -> String {
        match &self.address {
            Address::Tcp(addr) => format!("clamd at {addr}"),
            Address::Unix(path) => format!("clamd at unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_verdicts() {
        assert_eq!(verdict("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(
            verdict("stream: Eicar-Test-Signature FOUND").unwrap(),
            Verdict::Infected("Eicar-Test-Signature".into())
        );
        assert!(verdict("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(verdict("").is_err());
    }

    #[test]
    fn addresses_are_host_port_or_a_unix_socket() {
        assert!(Clamd::new("127.0.0.1:3310", Duration::from_secs(1)).is_ok());
        assert!(Clamd::new("clamav.internal:3310", Duration::from_secs(1)).is_ok());
        assert!(Clamd::new("unix:/run/clamav/clamd.ctl", Duration::from_secs(1)).is_ok());
        assert!(Clamd::new("unix:", Duration::from_secs(1)).is_err());
        assert!(Clamd::new("clamav", Duration::from_secs(1)).is_err());
    }
}
