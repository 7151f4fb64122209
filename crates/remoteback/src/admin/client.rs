//! The CLI's side of the admin API: plain HTTP requests to a proxy's or a
//! replay's admin address (`HOST:PORT`, or a full `http://` URL).

use std::time::Duration;

use remoteback_proxy::failover::WritesDuring;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::promotion::PromotionStatus;
use super::{
    FailoverStart, FailoverStatus, Failure, RepairRequest, Repaired, SyncStart, SyncStatus,
};

/// Longest a request may take: a repair waits for Kafka to acknowledge a
/// key's records.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Why an admin request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No answer: the service is not there, or went away.
    #[error("cannot reach the admin address {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The service answered with an error.
    #[error("refused ({status}): {error}")]
    Refused { status: u16, error: String },
}

/// A proxy's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    pub fn new(address: &str, token: Option<String>) -> AdminClient {
        let base = if address.contains("://") {
            address.trim_end_matches('/').to_string()
        } else {
            format!("http://{address}")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .new_agent();
        AdminClient { base, token, agent }
    }

    /// The running or last sync's progress.
    pub fn status(&self) -> Result<SyncStatus, AdminError> {
        self.get("/sync")
    }

    /// Starts a sync.
    pub fn start(&self, start: &SyncStart) -> Result<SyncStatus, AdminError> {
        self.post("/sync", start)
    }

    /// Asks the running sync to stop.
    pub fn cancel(&self) -> Result<SyncStatus, AdminError> {
        self.delete("/sync")
    }

    /// Copies one key through the log; answers once Kafka has it.
    pub fn repair(&self, repair: &RepairRequest) -> Result<Repaired, AdminError> {
        self.post("/repair", repair)
    }

    /// Asks a proxy to hold every write from now on (a planned failover),
    /// refusing them with `-READONLY` when `during` says so.
    pub fn failover(&self, during: WritesDuring) -> Result<FailoverStatus, AdminError> {
        let start = FailoverStart {
            clients: Some(during.name().to_string()),
        };
        self.post("/failover", &start)
    }

    /// A proxy's planned failover: whether everything is in Kafka.
    pub fn failover_status(&self) -> Result<FailoverStatus, AdminError> {
        self.get("/failover")
    }

    /// Lets a proxy's writes go again.
    pub fn cancel_failover(&self) -> Result<FailoverStatus, AdminError> {
        self.delete("/failover")
    }

    /// Asks a replay to apply everything Kafka holds and stop there.
    pub fn promote(&self) -> Result<PromotionStatus, AdminError> {
        self.post("/promote", &serde_json::json!({}))
    }

    /// A replay's promotion: where its partitions stopped so far.
    pub fn promotion(&self) -> Result<PromotionStatus, AdminError> {
        self.get("/promote")
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, AdminError> {
        let url = self.url(path);
        let answer = self.authorized(self.agent.post(&url)).send_json(body);
        self.read(&url, answer)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let url = self.url(path);
        let answer = self.authorized(self.agent.get(&url)).call();
        self.read(&url, answer)
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let url = self.url(path);
        let answer = self.authorized(self.agent.delete(&url)).call();
        self.read(&url, answer)
    }

    /// `request` with the admin token, when there is one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn read<T: DeserializeOwned>(
        &self,
        url: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, AdminError> {
        let unreachable = |e: ureq::Error| AdminError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let mut response = answer.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| AdminError::Unreachable {
                url: url.to_string(),
                reason: format!("not an admin answer ({e}): {text}"),
            });
        }
        let error = serde_json::from_str::<Failure>(&text)
            .map(|f| f.error)
            .unwrap_or_else(|_| text.trim().to_string());
        Err(AdminError::Refused { status, error })
    }
}
