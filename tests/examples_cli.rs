//! The examples' command lines from outside: a usage error is one line that names the option
//! (and the value), then a hint, exit status 2 — never the whole help; an error while
//! running (an address in use) is one line naming the address, exit status 1; goodbye's
//! `--message` understands the escapes its help shows.

mod common;

use std::net::TcpListener;

use common::process::{Server, run_to_exit};
use common::{Ending, peer, read_to_end};

/// Asserts a usage error: exit 2, nothing on stdout, and on stderr exactly one line
/// `NAME: ...` holding every one of `says`, then `try 'NAME --help'`.
fn assert_usage_error(name: &str, args: &[&str], says: &[&str]) {
    let (status, out, err) = run_to_exit(name, args);
    assert_eq!(status.code(), Some(2), "{name} {args:?}: {err}");
    assert_eq!(out, "", "{name} {args:?} printed to stdout");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{name} {args:?}: one line and the hint, not {err:?}"
    );
    assert!(lines[0].starts_with(&format!("{name}: ")), "{err:?}");
    for s in says {
        assert!(
            lines[0].contains(s),
            "{name} {args:?}: {:?} lacks {s:?}",
            lines[0]
        );
    }
    assert_eq!(lines[1], format!("try '{name} --help'"));
}

/// The server examples with the arguments each needs besides the ones under test.
const SERVERS: [(&str, &[&str]); 5] = [
    ("echo", &[]),
    ("goodbye", &[]),
    ("count", &[]),
    ("http", &[]),
    ("proxy", &["--upstream", "127.0.0.1:9"]),
];

#[test]
fn a_bad_value_names_its_option_and_the_value() {
    for (name, needed) in SERVERS {
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut args = needed.to_vec();
            args.extend_from_slice(extra);
            args
        };
        assert_usage_error(
            name,
            &with(&["--shutdown-timeout-ms", "-5"]),
            &["--shutdown-timeout-ms", "\"-5\""],
        );
        assert_usage_error(name, &with(&["--reactors", "x"]), &["--reactors", "\"x\""]);
        assert_usage_error(name, &with(&["--listen", "foo"]), &["--listen", "\"foo\""]);
        assert_usage_error(
            name,
            &with(&["--listen", "127.0.0.1:99999"]),
            &["--listen", "99999", "port"],
        );
        assert_usage_error(name, &with(&["--listen"]), &["--listen"]);
        assert_usage_error(name, &with(&["--no-such-option"]), &["--no-such-option"]);
        assert_usage_error(name, &with(&["stray"]), &["stray"]);
    }
    for option in ["--idle-timeout-ms", "--header-timeout-ms"] {
        assert_usage_error("http", &[option, "1.5"], &[option, "\"1.5\""]);
    }
    assert_usage_error(
        "echo",
        &["--idle-timeout-ms", "soon"],
        &["--idle-timeout-ms"],
    );
    assert_usage_error("proxy", &[], &["--upstream"]);
    assert_usage_error(
        "proxy",
        &["--upstream", "localhost"],
        &["--upstream", "\"localhost\""],
    );
}

/// The client's help promises exit status 2 for a command-line error — a malformed
/// `--connect` included (it used to exit 1) — and 1 for an error while running.
#[test]
fn client_command_line_errors_exit_2_and_the_help_says_so() {
    assert_usage_error("client", &[], &["--connect"]);
    assert_usage_error("client", &["--connect", "foo"], &["--connect", "\"foo\""]);
    assert_usage_error(
        "client",
        &["--connect", "127.0.0.1:99999"],
        &["--connect", "99999"],
    );
    assert_usage_error(
        "client",
        &["--connect", "::1:80"],
        &["--connect", "\"::1:80\"", "brackets"],
    );
    assert_usage_error("client", &["--no-such-option"], &["--no-such-option"]);
    let (status, help, _) = run_to_exit("client", &["--help"]);
    assert!(status.success());
    assert!(help.contains("  1  an error") && help.contains("  2  a command-line error"));
}

#[test]
fn help_is_whole_and_exits_0() {
    for (name, _) in SERVERS {
        let (status, out, err) = run_to_exit(name, &["--help"]);
        assert!(status.success(), "{name}: {status}");
        assert_eq!(err, "");
        assert!(out.starts_with(&format!("{name} — ")), "{out}");
        assert!(out.contains("OPTIONS:") && out.contains("--shutdown-timeout-ms"));
    }
}

/// An address in use: one line naming it, exit status 1 — with one reactor and with a group.
#[test]
fn an_address_in_use_is_one_line_naming_it() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    for reactors in ["1", "2"] {
        let (status, out, err) = run_to_exit("echo", &["--listen", &addr, "--reactors", reactors]);
        assert_eq!(status.code(), Some(1), "--reactors {reactors}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.starts_with("echo: ") && err.contains(&addr) && err.contains("in use"),
            "--reactors {reactors}: {err:?}"
        );
    }
}

/// `--message` understands `\n`, `\r`, `\t` and `\\` (the help shows the default as
/// `"Goodbye\n"`); everything else is sent as given.
#[test]
fn goodbye_message_escapes() {
    let server = Server::start("goodbye", &["--message", r"a\n\tb\\n\r\n c:\\d é"]);
    let mut s = peer(server.addr);
    let (got, ending) = read_to_end(&mut s);
    assert_eq!(String::from_utf8(got).unwrap(), "a\n\tb\\n\r\n c:\\d é");
    assert_eq!(ending, Ending::Fin);
}

#[test]
fn goodbye_message_with_an_unknown_escape_is_a_usage_error() {
    assert_usage_error(
        "goodbye",
        &["--message", r"C:\dir"],
        &["--message", r#""C:\dir""#, r"\d"],
    );
    assert_usage_error("goodbye", &["--message", r"bye\"], &["--message"]);
}
