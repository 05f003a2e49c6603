//! The one place where database errors are classified.
//!
//! postgres.js rejects with a `PostgresError` carrying a SQLSTATE `code`, or
//! with a client error whose `code` names what happened to the socket. Deno's
//! own socket errors carry only a `name`. Everything the driver awaits from
//! the port goes through [`classify`].

use crate::core::event::{DbError, DbErrorKind};

/// Client-side codes and error names that mean the connection is gone.
const CONNECTION_CODES: &[&str] = &[
    super::deadline::CALL_TIMEOUT,
    "CONNECTION_CLOSED",
    "CONNECTION_ENDED",
    "CONNECTION_DESTROYED",
    "CONNECT_TIMEOUT",
    "ECONNRESET",
    "ECONNREFUSED",
    "ECONNABORTED",
    "EPIPE",
    "ETIMEDOUT",
    "EHOSTUNREACH",
    "ConnectionReset",
    "ConnectionRefused",
    "ConnectionAborted",
    "BrokenPipe",
    "TimedOut",
    "UnexpectedEof",
    "NotConnected",
];

/// SQLSTATEs that mean the server ended or refused the session.
const CONNECTION_STATES: &[&str] = &[
    "57P01", // admin_shutdown: pg_terminate_backend, or a fast shutdown
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now: starting up or shutting down
    "53300", // too_many_connections
];

/// SQLSTATEs where the same statement may succeed if tried again.
const CONFLICT_STATES: &[&str] = &[
    "40P01", // deadlock_detected
    "40001", // serialization_failure
    "55P03", // lock_not_available
    "57014", // query_canceled: statement timeout
];

/// Classifies a failed call from its `code` (SQLSTATE or client code), its
/// error `name` and its `message`.
pub fn classify(code: Option<&str>, name: Option<&str>, message: &str) -> DbError {
    let kind = kind_of(code, name, message);
    DbError {
        kind,
        code: code.or(name).map(str::to_owned),
        message: hint(code, message),
    }
}

fn kind_of(code: Option<&str>, name: Option<&str>, message: &str) -> DbErrorKind {
    let known = |list: &[&str], value: Option<&str>| value.is_some_and(|v| list.contains(&v));
    if known(CONNECTION_CODES, code) || known(CONNECTION_CODES, name) {
        return DbErrorKind::Connection;
    }
    let Some(code) = code else {
        return DbErrorKind::Fatal;
    };
    if code.starts_with("08") || CONNECTION_STATES.contains(&code) {
        return DbErrorKind::Connection;
    }
    // Supavisor reports a pooled connection it lost as an internal error.
    if code == "XX000" && message.contains("DbHandler exited") {
        return DbErrorKind::Connection;
    }
    if CONFLICT_STATES.contains(&code) {
        return DbErrorKind::Conflict;
    }
    DbErrorKind::Fatal
}

/// Adds what an operator needs to know to errors that mean the database is
/// not set up for the worker.
fn hint(code: Option<&str>, message: &str) -> String {
    let hint = match code {
        Some("42P01" | "42883" | "3F000") => {
            "; are the edge_worker migrations applied and the pgmq extension installed?"
        }
        Some("42501") => "; the database role lacks a privilege the worker needs",
        _ => "",
    };
    format!("{message}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: Option<&str>, name: Option<&str>, message: &str) -> DbErrorKind {
        classify(code, name, message).kind
    }

    #[test]
    fn terminated_backend_is_a_connection_error() {
        assert_eq!(
            kind(Some("57P01"), None, "terminating connection"),
            DbErrorKind::Connection
        );
    }

    #[test]
    fn class_08_is_a_connection_error() {
        assert_eq!(
            kind(Some("08006"), None, "connection failure"),
            DbErrorKind::Connection
        );
    }

    #[test]
    fn client_codes_and_socket_names_are_connection_errors() {
        assert_eq!(
            kind(Some("CONNECTION_CLOSED"), None, "x"),
            DbErrorKind::Connection
        );
        assert_eq!(
            kind(None, Some("ConnectionReset"), "x"),
            DbErrorKind::Connection
        );
    }

    #[test]
    fn dbhandler_exited_is_a_connection_error() {
        assert_eq!(
            kind(Some("XX000"), None, "(EDBHANDLEREXITED) DbHandler exited"),
            DbErrorKind::Connection
        );
        assert_eq!(
            kind(Some("XX000"), None, "internal error"),
            DbErrorKind::Fatal
        );
    }

    #[test]
    fn deadlock_and_serialization_are_conflicts() {
        for code in ["40P01", "40001", "55P03", "57014"] {
            assert_eq!(kind(Some(code), None, "x"), DbErrorKind::Conflict, "{code}");
        }
    }

    #[test]
    fn missing_function_is_fatal_with_a_hint() {
        let e = classify(
            Some("42883"),
            None,
            "function edge_worker.archive does not exist",
        );
        assert_eq!(e.kind, DbErrorKind::Fatal);
        assert!(e.message.contains("migrations"));
    }

    #[test]
    fn an_error_without_code_is_fatal() {
        assert_eq!(
            kind(None, Some("TypeError"), "x is undefined"),
            DbErrorKind::Fatal
        );
    }
}
