//! What a handler answers when it does not succeed, and how that becomes the contract's
//! `Outcome`.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use operon_proto::v1 as pb;

/// The delay of [`HandlerError::temporary`]: Kopf's default for `TemporaryError`, 60 s.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(60);

/// Any error, boxed.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a handler returns.
pub type HandlerResult = Result<Option<serde_json::Value>, HandlerError>;

/// Why a handler did not succeed.
///
/// - [`HandlerError::Temporary`]: try again after `delay` (Kopf's `TemporaryError`).
/// - [`HandlerError::Permanent`]: stop trying; the handler is recorded as failed (Kopf's
///   `PermanentError`).
/// - [`HandlerError::Other`]: any other error — what `?` makes of an `std::error::Error`, an
///   `anyhow::Error`, a `String` or a `&str`. The core handles it per the handler's errors mode
///   ([`crate::ErrorsMode`]; by default: retried after the handler's backoff, 60 s unless
///   [`crate::HandlerOptions::backoff`] says otherwise), as Kopf handles an arbitrary exception.
/// - [`HandlerError::Deny`]: a validate or mutate handler denies the request on purpose, with a
///   message and an HTTP status code (Kopf's `AdmissionError`). Any other error denies it too
///   (with code 500); a `Deny` is preferred when several handlers deny one request. Elsewhere it
///   is a permanent error.
///
/// `HandlerError` deliberately does not implement `std::error::Error`, so that `?` converts any
/// error into it (as `anyhow::Error` does).
pub enum HandlerError {
    /// Try again after `delay` (zero: at once).
    Temporary {
        /// Stored as the handler's progress message and shown in Events and logs.
        message: String,
        /// When to try again.
        delay: Duration,
    },
    /// Stop trying: the handler is recorded as failed with this message.
    Permanent(String),
    /// Admission handlers: deny the request with this message and HTTP status code (Kopf's
    /// `AdmissionError`). In other handlers: a permanent error with the message.
    Deny {
        /// What the requesting user is told (kubectl prints it).
        message: String,
        /// The HTTP status code of the denial, e.g. 422 or 403; 0 means 500 (Kopf's default).
        code: u16,
    },
    /// Any other error; handled per the handler's errors mode.
    Other {
        /// The error's type, e.g. `ParseIntError` (Kopf's exception class; shown in logs).
        error_type: String,
        /// The error itself; its message (with its `source()` chain) is what the core stores.
        error: BoxError,
    },
}

impl HandlerError {
    /// A temporary error with the default delay ([`DEFAULT_DELAY`], 60 s).
    pub fn temporary(message: impl Into<String>) -> Self {
        Self::temporary_after(message, DEFAULT_DELAY)
    }

    /// A temporary error: try again after `delay`.
    pub fn temporary_after(message: impl Into<String>, delay: Duration) -> Self {
        Self::Temporary {
            message: message.into(),
            delay,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// An admission denial: a validate or mutate handler's answer that refuses the request with
    /// `message` and the HTTP status `code` (e.g. 422; 0 means 500), as Kopf's
    /// `AdmissionError(message, code)`.
    pub fn deny(message: impl Into<String>, code: u16) -> Self {
        Self::Deny {
            message: message.into(),
            code,
        }
    }

    /// The error's message; for [`HandlerError::Other`], the error and its sources joined by
    /// `": "`.
    pub fn message(&self) -> String {
        match self {
            Self::Temporary { message, .. }
            | Self::Permanent(message)
            | Self::Deny { message, .. } => message.clone(),
            Self::Other { error, .. } => chain(error.as_ref()),
        }
    }

    /// The contract's outcome for this error.
    pub(crate) fn to_outcome(&self) -> pb::outcome::Result {
        match self {
            Self::Temporary { message, delay } => {
                pb::outcome::Result::TemporaryError(pb::TemporaryError {
                    message: message.clone(),
                    delay: Some(crate::convert::duration(*delay)),
                })
            }
            Self::Permanent(message) | Self::Deny { message, .. } => {
                pb::outcome::Result::PermanentError(pb::PermanentError {
                    message: message.clone(),
                })
            }
            Self::Other { error_type, .. } => {
                pb::outcome::Result::ArbitraryError(pb::ArbitraryError {
                    message: self.message(),
                    error_type: error_type.clone(),
                })
            }
        }
    }

    /// The status code of an admission answer with this error: a [`HandlerError::Deny`]'s (0
    /// means 500, as the contract's `admission_code`); `None` for other errors, which the core
    /// answers with 500.
    pub(crate) fn admission_code(&self) -> Option<i32> {
        match self {
            Self::Deny { code: 0, .. } => Some(500),
            Self::Deny { code, .. } => Some(i32::from(*code)),
            Self::Temporary { .. } | Self::Permanent(_) | Self::Other { .. } => None,
        }
    }

    /// An error with this type name and message (for panics and for objects that cannot be
    /// read).
    pub(crate) fn other(error_type: &str, message: String) -> Self {
        Self::Other {
            error_type: error_type.to_owned(),
            error: message.into(),
        }
    }
}

/// `error: source: source…`
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        // anyhow's context and some wrappers repeat the source in their own message.
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}

/// A short name for an error type: its last path segment without generics or references
/// (`core::num::error::ParseIntError` → `ParseIntError`), with the crate for the many types
/// named just `Error` (`anyhow::Error`, `serde_json::Error`); `&str` and `String` → `Error`.
fn short_type_name(full: &str) -> String {
    let base = full
        .split('<')
        .next()
        .unwrap_or(full)
        .trim_start_matches('&');
    let last = base.rsplit("::").next().unwrap_or(base);
    match last {
        "" | "str" | "String" | "Cow" => "Error".to_owned(),
        "Error" => match base.split("::").next() {
            Some(krate) if krate != base && krate != "alloc" => format!("{krate}::Error"),
            _ => "Error".to_owned(),
        },
        name => name.to_owned(),
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<BoxError>,
{
    fn from(error: E) -> Self {
        Self::Other {
            error_type: short_type_name(std::any::type_name::<E>()),
            error: error.into(),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Temporary { message, delay } => f
                .debug_struct("Temporary")
                .field("message", message)
                .field("delay", delay)
                .finish(),
            Self::Permanent(message) => f.debug_tuple("Permanent").field(message).finish(),
            Self::Deny { message, code } => f
                .debug_struct("Deny")
                .field("message", message)
                .field("code", code)
                .finish(),
            Self::Other { error_type, error } => f
                .debug_struct("Other")
                .field("error_type", error_type)
                .field("error", error)
                .finish(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Temporary { message, delay } => {
                write!(f, "temporary error (retry in {delay:?}): {message}")
            }
            Self::Permanent(message) => write!(f, "permanent error: {message}"),
            Self::Deny { message, code } => {
                let code = if *code == 0 { 500 } else { *code };
                write!(f, "denied (HTTP {code}): {message}")
            }
            Self::Other { error_type, .. } => write!(f, "{error_type}: {}", self.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<i32, HandlerError> {
        Ok(text.parse::<i32>()?)
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot reach the backend")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn question_mark_makes_other_errors() {
        let error = parse("x").unwrap_err();
        let pb::outcome::Result::ArbitraryError(arbitrary) = error.to_outcome() else {
            panic!("not arbitrary: {error:?}");
        };
        assert_eq!(arbitrary.error_type, "ParseIntError");
        assert_eq!(arbitrary.message, "invalid digit found in string");

        let from_str = || -> Result<(), HandlerError> { Err("plain text")? };
        let error = from_str().unwrap_err();
        assert_eq!(error.message(), "plain text");
        assert!(matches!(&error, HandlerError::Other { error_type, .. } if error_type == "Error"));

        let nested: HandlerError = Outer(std::io::Error::other("refused")).into();
        assert_eq!(nested.message(), "cannot reach the backend: refused");
        assert!(nested.to_string().starts_with("Outer: "));
    }

    #[test]
    fn temporary_and_permanent_outcomes() {
        let pb::outcome::Result::TemporaryError(t) = HandlerError::temporary("later").to_outcome()
        else {
            panic!("not temporary")
        };
        assert_eq!(t.message, "later");
        assert_eq!(
            t.delay,
            Some(prost_types::Duration {
                seconds: 60,
                nanos: 0
            })
        );
        let quick = HandlerError::temporary_after("soon", Duration::from_millis(1500));
        let pb::outcome::Result::TemporaryError(t) = quick.to_outcome() else {
            panic!("not temporary")
        };
        assert_eq!(
            t.delay,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            HandlerError::permanent("no").to_outcome(),
            pb::outcome::Result::PermanentError(pb::PermanentError {
                message: "no".into()
            })
        );
    }

    #[test]
    fn denials_are_permanent_errors_with_a_code() {
        let denied = HandlerError::deny("no widgets on Sundays", 422);
        assert_eq!(
            denied.to_outcome(),
            pb::outcome::Result::PermanentError(pb::PermanentError {
                message: "no widgets on Sundays".into()
            })
        );
        assert_eq!(denied.admission_code(), Some(422));
        assert_eq!(HandlerError::deny("x", 0).admission_code(), Some(500));
        assert_eq!(HandlerError::permanent("x").admission_code(), None);
        assert_eq!(HandlerError::from("x").admission_code(), None);
        assert_eq!(
            denied.to_string(),
            "denied (HTTP 422): no widgets on Sundays"
        );
    }

    #[test]
    fn type_names() {
        assert_eq!(short_type_name("anyhow::Error"), "anyhow::Error");
        assert_eq!(short_type_name("&str"), "Error");
        assert_eq!(short_type_name("alloc::string::String"), "Error");
        assert_eq!(
            short_type_name("serde_json::error::Error"),
            "serde_json::Error"
        );
        assert_eq!(short_type_name("my::Fail<u8>"), "Fail");
    }
}
