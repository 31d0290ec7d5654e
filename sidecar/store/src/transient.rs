//! The typed classifier of transient store failures: which `object_store` errors are of the
//! kind worth retrying the whole operation later (the server was unreachable, reset the
//! connection, timed out, or answered 5xx / 429 / 408 through every retry), as opposed to
//! failures that will fail again (permission, precondition, malformed request, a full disk).
//!
//! object_store retries those failures itself, but does not say which kind it finally gave up
//! on: its retry error type is not public (apache/arrow-rs-object-store#737), and a retryable
//! HTTP status survives only as text in the message. So the S3 client is built with
//! [`ClassifyingConnector`]: it wraps object_store's own reqwest connector and turns a response
//! whose status object_store would retry (5xx, 429, 408) into an [`HttpError`] of kind
//! `Request` whose source is a [`RetryableStatus`] of ours. object_store retries a `Request`
//! error exactly as it retries those statuses (for every method, with the same backoff and
//! budget), so retry behaviour is unchanged; what changes is that the error it returns in the
//! end carries a value [`is_transient`] can find by type. Everything else is classified by
//! type too: object_store's public `HttpErrorKind` and `std::io::ErrorKind`. No message text
//! is matched.
//!
//! Not covered: an S3 `200 OK` whose body is an error document (CompleteMultipartUpload can
//! answer so); object_store retries it, and if it persists it is reported as not transient.

use std::error::Error as StdError;

use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpService, ReqwestConnector,
};

/// The most of an error response body read for its S3 `<Code>` (S3 error documents are
/// a few hundred bytes; a longer body is cut, not waited for).
const ERROR_BODY_LIMIT: usize = 8 * 1024;

/// A response with a status object_store retries (5xx, 429, 408): the source of the
/// [`HttpError`] the classifying client reports in its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server answered HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct RetryableStatus {
    /// The HTTP status code.
    pub status: u16,
    /// The S3 error code from the response body (`SlowDown`, `InternalError`, …), if any.
    pub code: Option<String>,
}

/// Whether object_store retries a response with this status (its `client/retry.rs`: server
/// errors, 429 Too Many Requests, 408 Request Timeout).
pub fn is_retryable_status(status: u16) -> bool {
    (500..600).contains(&status) || status == 429 || status == 408
}

/// Whether an object_store error is of the transient kind, by the types in its source chain:
/// a [`RetryableStatus`], an [`HttpError`] of kind Connect / Request / Timeout / Interrupted,
/// or an io error of a connection or timeout kind.
pub fn is_transient(err: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<RetryableStatus>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<HttpError>() {
            if matches!(
                h.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            ) {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// object_store's reqwest connector, with responses of a retryable status turned into typed
/// errors (see the module comment).
#[derive(Debug, Default)]
pub struct ClassifyingConnector(ReqwestConnector);

impl HttpConnector for ClassifyingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(ClassifyingService(self.0.connect(options)?)))
    }
}

#[derive(Debug)]
struct ClassifyingService(HttpClient);

#[async_trait::async_trait]
impl HttpService for ClassifyingService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self.0.execute(req).await?;
        let status = response.status().as_u16();
        if !is_retryable_status(status) {
            return Ok(response);
        }
        let code = s3_error_code(response).await;
        Err(HttpError::new(HttpErrorKind::Request, RetryableStatus { status, code }))
    }
}

/// The `<Code>` of an S3 error document in the response body, reading at most
/// [`ERROR_BODY_LIMIT`] bytes; `None` when there is none or the body fails.
async fn s3_error_code(response: HttpResponse) -> Option<String> {
    use futures::StreamExt;
    let mut body = response.into_body().bytes_stream();
    let mut text = Vec::new();
    while text.len() < ERROR_BODY_LIMIT {
        match body.next().await {
            Some(Ok(b)) => text.extend_from_slice(&b[..b.len().min(ERROR_BODY_LIMIT - text.len())]),
            Some(Err(_)) | None => break,
        }
    }
    let text = String::from_utf8_lossy(&text);
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    let plain = !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    plain.then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: Box<dyn StdError + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source }
    }

    #[test]
    fn retryable_statuses_are_objectstores() {
        for s in [500, 502, 503, 504, 599, 429, 408] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 204, 301, 400, 401, 403, 404, 409, 412, 416, 499, 600] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn classifies_by_type_through_the_chain() {
        let status = HttpError::new(HttpErrorKind::Request, RetryableStatus { status: 503, code: Some("SlowDown".into()) });
        assert!(is_transient(&generic(Box::new(status))));
        for kind in [HttpErrorKind::Connect, HttpErrorKind::Request, HttpErrorKind::Timeout, HttpErrorKind::Interrupted] {
            let e = HttpError::new(kind, std::io::Error::other("x"));
            assert!(is_transient(&generic(Box::new(e))), "{kind:?}");
        }
        for kind in [HttpErrorKind::Decode, HttpErrorKind::Unknown] {
            let e = HttpError::new(kind, std::io::Error::other("x"));
            assert!(!is_transient(&generic(Box::new(e))), "{kind:?}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_transient(&generic(Box::new(reset))));
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(!is_transient(&generic(Box::new(full))));
        let denied = object_store::Error::PermissionDenied { path: "a".into(), source: "no".into() };
        assert!(!is_transient(&denied));
    }

    #[test]
    fn message_text_is_not_evidence() {
        // The words a text matcher looked for, in an error of no transient type.
        let e = generic("Server returned non-2xx status code: 503 SlowDown InternalError".into());
        assert!(!is_transient(&e));
    }
}
