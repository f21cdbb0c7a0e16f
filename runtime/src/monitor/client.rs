//! The server's side of the monitor's control socket: one command per connection, one line each
//! way (`exec` then a length-prefixed [`ExecStart`] with the stdio as descriptors; `attach`;
//! `reopen`; `limits`; `version`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::ExecStart;

/// Starts `args` in the container behind the monitor at `socket`, with `stdio` (one terminal
/// descriptor with `tty`, else stdin, stdout, stderr). Returns the connection that reports the
/// exit (`exit CODE`) and the process's pid.
pub fn start_exec(
    socket: &Path,
    args: &[String],
    tty: bool,
    stdio: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<(UnixStream, i32)> {
    let conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    (&conn).write_all(b"exec\n")?;
    let line = read_line(&conn)?;
    if line != "ready" {
        return Err(std::io::Error::other(
            line.trim_start_matches("error ").to_string(),
        ));
    }
    let body = serde_json::to_vec(&ExecStart {
        args: args.to_vec(),
        tty,
    })
    .map_err(std::io::Error::other)?;
    if body.len() > 60 * 1024 {
        return Err(std::io::Error::other("the command is longer than 60 KiB"));
    }
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    platform::fdpass::send_with_fds(&conn, &msg, stdio)?;
    let line = read_line(&conn)?;
    match line.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) => {
            conn.set_read_timeout(None)?;
            Ok((conn, pid))
        }
        None if line.is_empty() => Err(std::io::Error::other(
            "the monitor closed the connection without answering",
        )),
        None => Err(std::io::Error::other(
            line.trim_start_matches("error ").to_string(),
        )),
    }
}

/// The control protocol the monitor behind `socket` speaks: its answer to `version`, or 1 from a
/// monitor older than that command.
pub fn protocol_of(socket: &Path, timeout: Duration) -> std::io::Result<u32> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(b"version\n")?;
    parse_version(&read_line(&conn)?)
}

fn parse_version(reply: &str) -> std::io::Result<u32> {
    if let Some(n) = reply.strip_prefix("ok ").and_then(|n| n.parse().ok()) {
        return Ok(n);
    }
    if reply.starts_with("error unknown command") {
        return Ok(1);
    }
    expect_ok(reply).and_then(|()| Err(std::io::Error::other("`version` answered without one")))
}

/// Whether a monitor's refusal says it does not know the command (an older monitor).
pub fn is_unknown_command(e: &std::io::Error) -> bool {
    e.to_string().starts_with("unknown command")
}

/// One answer line, read byte by byte (nothing past it is consumed).
fn read_line(conn: &UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match (&*conn).read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

/// Connects to a container's stdio through the monitor behind `socket`: past the handshake,
/// the connection carries [`crate::attach`] frames.
pub fn open_attach(socket: &Path) -> std::io::Result<UnixStream> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"attach\n")?;
    expect_ok(&read_line(&conn)?)?;
    conn.set_read_timeout(None)?;
    conn.set_write_timeout(None)?;
    Ok(conn)
}

/// Asks the monitor behind `socket` to run `command`; its one-line answer, `ok` on success.
pub fn send_command(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<()> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(format!("{command}\n").as_bytes())?;
    expect_ok(&read_line(&conn)?)
}

/// A monitor's one-line answer: `ok`, or why not.
fn expect_ok(reply: &str) -> std::io::Result<()> {
    match reply {
        "ok" => Ok(()),
        "" => Err(std::io::Error::other(
            "the monitor closed the connection without answering",
        )),
        other => Err(std::io::Error::other(
            other.trim_start_matches("error ").to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_ok_or_say_why_not() {
        assert!(expect_ok("ok").is_ok());
        let e = expect_ok("error unknown command \"x\"").expect_err("refused");
        assert_eq!(e.to_string(), "unknown command \"x\"");
        let e = expect_ok("").expect_err("closed");
        assert!(e.to_string().contains("without answering"), "{e}");
    }

    #[test]
    fn versions_come_from_the_answer_and_older_monitors_are_one() {
        assert_eq!(parse_version("ok 2").expect("v2"), 2);
        assert_eq!(
            parse_version("error unknown command \"version\"").expect("v1"),
            1
        );
        assert!(parse_version("").is_err());
        assert!(parse_version("ok").is_err());
        assert!(is_unknown_command(
            &expect_ok("error unknown command \"exec\"").expect_err("old")
        ));
    }

    #[test]
    fn a_line_is_read_up_to_its_newline_and_no_further() {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(b"ok 42\nexit 0\n").expect("write");
        assert_eq!(read_line(&b).expect("line"), "ok 42");
        assert_eq!(read_line(&b).expect("line"), "exit 0");
        drop(a);
        assert_eq!(read_line(&b).expect("eof"), "");
    }

    #[test]
    fn commands_to_a_missing_monitor_fail_with_the_socket_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("gone.sock");
        assert!(send_command(&socket, "reopen", Duration::from_secs(1)).is_err());
        assert!(open_attach(&socket).is_err());
    }
}
