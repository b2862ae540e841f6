//! The picker's "custom command" agent: a person types a command line and the port(s) it
//! serves; this turns them into the `command` and `ports` that `POST /api/v1/sandboxes`
//! takes, or says what to fix. The page then creates the sandbox through the API as for any
//! other agent, so the API's own checks still apply.
//!
//! The line is split with POSIX shell word rules (the `shlex` crate: quotes, backslashes,
//! comments), as a person who types commands into a terminal expects; it is not run by a
//! shell, so shell operators (`&&`, `|`, `>`…) are refused with a pointer to `sh -c`
//! rather than passed to the program as arguments.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::session::{CSRF_HEADER, Viewer, tokens_match};
use crate::agents::check_ports;
use crate::api::ApiError;

/// Words that mean something only to a shell.
const SHELL_OPERATORS: &[&str] = &[
    "&&", "||", "|", ";", "&", ">", ">>", "<", "<<", "2>", "2>&1", "&>",
];
/// An example shown in errors.
const EXAMPLE: &str = "python3 -m http.server 8000";

/// What the picker sends: the command line and the ports, as typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Typed {
    command: String,
    #[serde(default)]
    ports: String,
}

/// The command as the API takes it.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub(super) struct Parsed {
    /// The program and its arguments.
    command: Vec<String>,
    /// The ports, the one its session host reaches first.
    ports: Vec<u16>,
}

/// `POST /new-session/command`: the typed command line and ports as `{command, ports}`, or
/// a 400 that says what to fix. Changes nothing; like every cookie-authenticated POST it
/// needs the page's CSRF token.
pub(super) async fn parse(
    viewer: Viewer,
    headers: HeaderMap,
    body: Result<Json<Typed>, JsonRejection>,
) -> Response {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !sent.is_some_and(|t| tokens_match(t, &viewer.csrf)) {
        return ApiError::forbidden("missing or wrong X-CSRF-Token: reload the page and try again")
            .into_response();
    }
    let Json(typed) = match body {
        Ok(typed) => typed,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    match split(&typed.command, &typed.ports) {
        Ok(parsed) => viewer.with_cookie(Json(parsed).into_response()),
        Err(refusal) => refusal.into_response(),
    }
}

/// What is wrong with the form, by field: a 400 whose code names the field to fix.
#[derive(Debug)]
enum Refusal {
    /// The command line (`bad_command`).
    Command(String),
    /// The ports (`bad_ports`).
    Ports(String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Refusal::Command(m) | Refusal::Ports(m) => m,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let code = match self {
            Refusal::Command(_) => "bad_command",
            Refusal::Ports(_) => "bad_ports",
        };
        let body = serde_json::json!({ "error": { "code": code, "message": self.message() } });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// Splits `line` into words and reads `ports` (numbers separated by commas or spaces).
fn split(line: &str, ports: &str) -> Result<Parsed, Refusal> {
    Ok(Parsed {
        command: words(line).map_err(Refusal::Command)?,
        ports: parse_ports(ports).map_err(Refusal::Ports)?,
    })
}

/// `line` as words, shell style.
fn words(line: &str) -> Result<Vec<String>, String> {
    if line.contains('\0') {
        return Err("The command must not contain a NUL character.".into());
    }
    let command = shlex::split(line).ok_or_else(|| {
        "The command has a quote that is not closed (or ends in a backslash): close it, \
         for example echo 'hello world'."
            .to_owned()
    })?;
    if command.is_empty() {
        return Err(format!("Type the command to run, for example {EXAMPLE}."));
    }
    // An operator word that also stands unquoted in the line (`echo '&&'` is fine).
    let unquoted = |w: &&String| line.split_whitespace().any(|raw| raw == w.as_str());
    if let Some(op) = command
        .iter()
        .filter(|w| SHELL_OPERATORS.contains(&w.as_str()))
        .find(unquoted)
    {
        return Err(format!(
            "{op} is shell syntax, but the command runs without a shell: write it as \
             sh -c '…', for example sh -c 'npm install && npm start'."
        ));
    }
    Ok(command)
}

/// `8000, 8001` or `8000 8001` as ports; none is fine (a command that serves nothing).
fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let ports = text
        .split([',', ' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>().map_err(|_| {
                format!(
                    "{p:?} is not a port: give numbers from 1 to 65535, separated by commas, \
                     for example 8000, 8001."
                )
            })
        })
        .collect::<Result<Vec<u16>, String>>()?;
    check_ports(&ports).map_err(|e| format!("Ports: {e}. The first one is the one opened."))?;
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_as_a_shell_would() {
        for (line, expected) in [
            (
                "python3 -m http.server 8000",
                &["python3", "-m", "http.server", "8000"][..],
            ),
            ("  echo   'hello world'  ", &["echo", "hello world"]),
            (
                r#"sh -c "npm install && npm start""#,
                &["sh", "-c", "npm install && npm start"],
            ),
            (r"echo a\ b", &["echo", "a b"]),
            ("echo '&&'", &["echo", "&&"]),
            ("node server.js # the dev server", &["node", "server.js"]),
        ] {
            assert_eq!(words(line).unwrap(), expected, "{line}");
        }
    }

    #[test]
    fn bad_command_lines_say_what_to_fix() {
        for (line, says) in [
            ("", "Type the command"),
            ("   ", "Type the command"),
            ("echo 'open", "not closed"),
            ("echo a\\", "not closed"),
            ("npm install && npm start", "sh -c"),
            ("ls | wc -l", "| is shell syntax"),
            ("a\0b", "NUL"),
        ] {
            let error = words(line).unwrap_err();
            assert!(error.contains(says), "{line:?}: {error}");
        }
    }

    #[test]
    fn refusals_name_the_field_to_fix() {
        assert!(matches!(split("'", "8000"), Err(Refusal::Command(_))));
        assert!(matches!(split("ls", "x"), Err(Refusal::Ports(_))));
        assert_eq!(
            split("ls -l", "8000").unwrap(),
            Parsed {
                command: vec!["ls".into(), "-l".into()],
                ports: vec![8000]
            }
        );
    }

    #[test]
    fn ports_are_numbers_separated_by_commas_or_spaces() {
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert_eq!(parse_ports("8000").unwrap(), [8000]);
        assert_eq!(
            parse_ports(" 8000, 8001 9000,").unwrap(),
            [8000, 8001, 9000]
        );
        for (text, says) in [
            ("http", "\"http\" is not a port"),
            ("70000", "not a port"),
            ("-1", "not a port"),
            ("0", "port 0"),
            ("8000, 8000", "must not repeat"),
        ] {
            let error = parse_ports(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
