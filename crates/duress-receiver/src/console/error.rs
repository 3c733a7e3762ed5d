//! The console's one error type. Handlers return `Result<Response, ConsoleError>` and use `?`;
//! the answer says what happened without internals: a database that cannot answer is a 503
//! "try again" page (never a misleading 404), a missing thing is a 404, our own bug a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::error_page;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing with this id or path.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A page could not be rendered (a template bug).
    #[error("rendering a page: {0}")]
    Render(#[from] askama::Error),
    /// Anything else on our side (a task that panicked, …).
    #[error("{0}")]
    Internal(String),
}

pub type ConsoleResult<T = Response> = Result<T, ConsoleError>;

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Store(StoreError::NoSuchDevice(_)) | ConsoleError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(
            self,
            ConsoleError::Store(StoreError::Unavailable(_) | StoreError::Corrupt(_))
        ) {
            crate::metrics::global().database_error("console");
        }
        let (title, message) = match &self {
            ConsoleError::NotFound(what) => ("Not found", *what),
            ConsoleError::Store(StoreError::NoSuchDevice(_)) => {
                ("Not found", "There is no such station.")
            }
            ConsoleError::Store(StoreError::Unavailable(_)) => (
                "The receiver's database is not answering",
                "Nothing was changed. Try again in a few seconds; if it persists, check the \
                 receiver's log and its database.",
            ),
            _ => (
                "Something went wrong",
                "The console could not do this. Try again; if it persists, check the receiver's log.",
            ),
        };
        if status.is_server_error() {
            // Logged in full here, shown without detail.
            tracing::error!(error = %self, "console request failed");
        }
        let mut response = error_page(status, title, message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
