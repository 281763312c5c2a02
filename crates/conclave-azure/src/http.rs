//! The one HTTP client every Azure call goes through: rustls with the public web roots, plus a
//! private CA when `CONCLAVE_AZURE_CA_FILE` names one (private endpoints, the test stand-in).
//! Certificate checks are never turned off.

use std::path::Path;
use std::time::Duration;

use crate::error::{AzureError, Result};

/// Per-request timeout unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client trusting the public roots and, if given, the PEM certificates in `ca_file`.
pub fn client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .https_only(false);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| AzureError::Config(format!("CONCLAVE_AZURE_CA_FILE {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| AzureError::Config(format!("CONCLAVE_AZURE_CA_FILE {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(AzureError::Config(format!("CONCLAVE_AZURE_CA_FILE {} holds no certificate", path.display())));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| AzureError::Config(format!("HTTP client: {e}")))
}

/// A transport error as an outage, without the URL's query (which could carry a resource name
/// but never a secret; kept short anyway).
pub(crate) fn unavailable(service: &'static str, e: &reqwest::Error) -> AzureError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let host = e.url().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    AzureError::Unavailable { service, detail: format!("{what} ({host}): {}", root_cause(e)) }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// How a call that may be retried is retried: transport errors, 5xx and 429 (after its
/// `Retry-After`) up to `attempts` times in all, with doubling delays from `base_delay`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    /// A 429 asking to wait longer than this is not waited for: the call fails as unavailable.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 3, base_delay: Duration::from_millis(200), max_retry_after: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// One attempt: for calls that must not be repeated blindly (a rotation).
    pub fn once() -> Self {
        Self { attempts: 1, ..Self::default() }
    }
}

/// Sends the request `make` builds, retrying as `policy` says. Returns the first answer that is
/// neither 429 nor 5xx (success or a client error for the caller to map), else the outage.
pub(crate) async fn send(
    service: &'static str,
    policy: &RetryPolicy,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response> {
    let attempts = policy.attempts.max(1);
    let mut delay = policy.base_delay;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let wait = match make().send().await {
            Ok(resp) => {
                let status = resp.status();
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    let after = retry_after(&resp).unwrap_or(delay);
                    if after > policy.max_retry_after {
                        return Err(AzureError::Unavailable {
                            service,
                            detail: format!("throttled (429) and asked to wait {} s", after.as_secs()),
                        });
                    }
                    last = "throttled (429)".to_owned();
                    after
                } else if status.is_server_error() {
                    last = format!("answered {status}");
                    delay
                } else {
                    return Ok(resp);
                }
            }
            Err(e) => {
                let err = unavailable(service, &e);
                last = match &err {
                    AzureError::Unavailable { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                delay
            }
        };
        if attempt < attempts {
            tracing::debug!(service, attempt, wait_ms = wait.as_millis() as u64, reason = %last, "retrying");
            tokio::time::sleep(wait).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(AzureError::Unavailable { service, detail: format!("{last} after {attempts} attempts") })
}

/// `Retry-After` in seconds (the only form Azure sends).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
