//! Request heads for the `http` example server: [`httparse`] reads the syntax, this module
//! adds the server's policy on top (limits, keep-alive, body framing).
//!
//! [`parse`] keeps no state, never panics, allocates only the two strings of a request it
//! accepts and looks at no more than [`MAX_HEAD`] bytes, so it can be fed straight from a
//! socket buffer again each time more bytes arrive, and fuzzed (`fuzz/fuzz_targets/
//! http_request.rs`, replayed by `cargo test --test fuzz_replays`). It only understands the
//! head; the body is left to the caller, whose length is [`Request::content_length`].
//!
//! # Rules
//!
//! - **Syntax** is httparse's, with its strict defaults: lines end in CRLF or a bare LF (so
//!   requests typed by hand with `nc` work), a CR not followed by LF is a 400; empty lines
//!   before the request line are skipped (RFC 9112 §2.2) but count toward [`MAX_HEAD`]; the
//!   request line is `METHOD SP TARGET SP VERSION` with single spaces, METHOD a token,
//!   VERSION `HTTP/1.0` or `HTTP/1.1`; a header line is `name ":" OWS value OWS` with a token
//!   name and nothing between it and the colon, a value of visible ASCII, SP, HT and obs-text
//!   (any other control byte, NUL included, is a 400); obs-fold (a line starting with SP or
//!   HT) is a 400. Anything else is a 400.
//! - **Target**: visible ASCII only (`0x21..=0x7E`; httparse also lets UTF-8 through, a
//!   target must be percent-encoded): otherwise 400.
//! - **`Connection`** is a comma-separated list of case-insensitive tokens. HTTP/1.1 keeps
//!   the connection alive unless `close` is listed; HTTP/1.0 keeps it alive only if
//!   `keep-alive` is listed and `close` is not.
//! - **`Content-Length`** must be plain decimal digits that fit in a `u64`. Repeated fields
//!   or a comma-separated list are accepted only if every value is the same number;
//!   otherwise the message is a 400 (RFC 9110 §8.6), since the body boundary would be
//!   ambiguous.
//! - **`Transfer-Encoding`** (chunked or any other coding, with or without a
//!   `Content-Length`): this server does not implement request bodies in a transfer coding,
//!   and HTTP's answer for that is 501 Not Implemented (RFC 9112 §6.1), then the connection
//!   ends, since where the body stops is unknown (reading on could misread it as further
//!   requests: request smuggling). In an HTTP/1.0 request the field is faulty framing
//!   (RFC 9112 §6.1): 400.
//! - **Limits.** The head (leading empty lines, request line, header lines and the blank
//!   line) may be at most [`MAX_HEAD`] bytes and carry at most [`MAX_HEADERS`] fields;
//!   beyond either the answer is a 431.
//! - **Early errors.** A syntax error is reported at the first byte that breaks the rules,
//!   even before its line or the head is complete, so garbage (for instance a TLS hello sent
//!   to the plain-text port) is turned away at once. The rules on header values (the last
//!   four above) are applied once the head is complete.
//! - **Stable answers.** An answer other than [`Parse::Incomplete`] never changes when more
//!   bytes arrive.
//! - **Pipelining.** Bytes after the head are never looked at, so a caller can slice them off
//!   and parse the next request.

/// Largest header section accepted (request line + headers + blank line), bytes.
///
/// Bounds the memory a client can make the server hold before it has a full
/// head, and with it the cost of re-parsing a growing buffer.
pub const MAX_HEAD: usize = 8 * 1024;

/// Most header fields accepted.
///
/// Caps the per-request work spent on headers independently of their size.
pub const MAX_HEADERS: usize = 100;

/// Protocol version of a request, needed because the keep-alive default
/// differs between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: connections close after one response unless asked otherwise.
    Http10,
    /// `HTTP/1.1`: connections persist unless asked otherwise.
    Http11,
}

/// What the server needs from a request head to answer it and to find the
/// next request on the same connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request method, kept verbatim because methods are case-sensitive.
    pub method: String,
    /// Request target exactly as sent, so routing decides what it means.
    pub target: String,
    /// Version from the request line; the response should match it.
    pub version: Version,
    /// Whether the connection stays open after the response (HTTP/1.1: unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// Body length from Content-Length (0 if absent). The parser does not buffer bodies: the caller skips this many bytes after the head.
    pub content_length: u64,
}

/// Why a request head was rejected; either way the connection must end,
/// because the server can no longer tell where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed request: answer 400 and end the connection.
    BadRequest,
    /// Header section over [`MAX_HEAD`] bytes or over [`MAX_HEADERS`] fields: answer 431 and end.
    HeadersTooLarge,
    /// A body in a transfer coding (`Transfer-Encoding`, HTTP/1.1), which this server does not
    /// implement: answer 501 and end.
    NotImplemented,
}

impl ParseError {
    /// The HTTP status code to answer with, so the caller needs no mapping of
    /// its own: 400 for [`ParseError::BadRequest`], 431 for
    /// [`ParseError::HeadersTooLarge`], 501 for [`ParseError::NotImplemented`].
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            ParseError::BadRequest => 400,
            ParseError::HeadersTooLarge => 431,
            ParseError::NotImplemented => 501,
        }
    }

    /// The reason phrase that goes with [`status`](Self::status).
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::BadRequest => "Bad Request",
            ParseError::HeadersTooLarge => "Request Header Fields Too Large",
            ParseError::NotImplemented => "Not Implemented",
        }
    }
}

/// Outcome of a successful [`parse`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Need more bytes (buffer holds a valid prefix of a head no larger than [`MAX_HEAD`]).
    Incomplete,
    /// A full head: `head_len` bytes of `buf` are consumed (not including the body).
    Complete {
        /// The parsed head.
        request: Request,
        /// Where the body (or the next pipelined request) starts in `buf`.
        head_len: usize,
    },
}

/// Parses the request head at the start of `buf`.
///
/// Meant to be called again on the whole buffer each time more bytes arrive:
/// it keeps no state, so the caller needs none either. Only the first
/// [`MAX_HEAD`] bytes are ever examined, which bounds each call's cost.
///
/// # Errors
///
/// [`ParseError::BadRequest`] as soon as the head breaks the rules in the
/// module docs; [`ParseError::HeadersTooLarge`] once the head cannot fit in
/// [`MAX_HEAD`] bytes or has more than [`MAX_HEADERS`] fields;
/// [`ParseError::NotImplemented`] for a complete HTTP/1.1 head with a
/// `Transfer-Encoding`.
pub fn parse(buf: &[u8]) -> Result<Parse, ParseError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => Ok(Parse::Complete {
            request: interpret(&head)?,
            head_len,
        }),
        // The window is full and the head still goes on.
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(ParseError::HeadersTooLarge),
        Ok(httparse::Status::Partial) => Ok(Parse::Incomplete),
        // A field past the `MAX_HEADERS` slots.
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::HeadersTooLarge),
        Err(_) => Err(ParseError::BadRequest),
    }
}

/// The server's policy on a head httparse accepted.
fn interpret(head: &httparse::Request<'_, '_>) -> Result<Request, ParseError> {
    let (Some(method), Some(target), Some(minor)) = (head.method, head.path, head.version) else {
        return Err(ParseError::BadRequest);
    };
    if !target.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        return Err(ParseError::BadRequest);
    }
    let version = match minor {
        0 => Version::Http10,
        _ => Version::Http11,
    };
    let (mut close, mut keep_alive, mut content_length) = (false, false, None);
    let mut transfer_coding = false;
    for field in head.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for option in field.value.split(|&b| b == b',').map(trim_ows) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for item in field.value.split(|&b| b == b',').map(trim_ows) {
                let n = parse_decimal(item)?;
                if content_length.is_some_and(|old| old != n) {
                    return Err(ParseError::BadRequest);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_coding = true;
        }
    }
    // After the loop: a malformed field anywhere is a 400 first.
    if transfer_coding {
        return Err(match version {
            Version::Http11 => ParseError::NotImplemented,
            Version::Http10 => ParseError::BadRequest,
        });
    }
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        keep_alive,
        content_length: content_length.unwrap_or(0),
    })
}

fn parse_decimal(digits: &[u8]) -> Result<u64, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::BadRequest);
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadRequest);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::BadRequest)
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse(buf) {
            Ok(Parse::Complete { request, head_len }) => (request, head_len),
            other => panic!("expected Complete for {buf:?}, got {other:?}"),
        }
    }

    fn bad(buf: &[u8]) {
        assert_eq!(parse(buf), Err(ParseError::BadRequest), "input {buf:?}");
    }

    #[test]
    fn status_codes() {
        assert_eq!(ParseError::BadRequest.status(), 400);
        assert_eq!(ParseError::HeadersTooLarge.status(), 431);
        assert_eq!(ParseError::NotImplemented.status(), 501);
    }

    #[test]
    fn simple_get_http11_keeps_alive() {
        let buf = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let (req, len) = complete(buf);
        assert_eq!(len, buf.len());
        assert_eq!(
            req,
            Request {
                method: "GET".into(),
                target: "/index.html".into(),
                version: Version::Http11,
                keep_alive: true,
                content_length: 0,
            }
        );
    }

    #[test]
    fn http10_closes_by_default() {
        let (req, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(req.version, Version::Http10);
        assert!(!req.keep_alive);
    }

    #[test]
    fn http10_with_keep_alive_stays_open() {
        let (req, _) = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(req.keep_alive);
    }

    #[test]
    fn connection_close_is_case_insensitive() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nconnection: Close\r\n\r\n");
        assert!(!req.keep_alive);
        let (req, _) = complete(b"GET / HTTP/1.1\r\nCONNECTION:CLOSE\r\n\r\n");
        assert!(!req.keep_alive);
    }

    #[test]
    fn close_wins_over_keep_alive() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!req.keep_alive);
        let (req, _) =
            complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: \t close \r\n\r\n");
        assert!(!req.keep_alive);
    }

    #[test]
    fn unknown_connection_options_are_ignored() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nConnection: upgrade, , x-closed\r\n\r\n");
        assert!(req.keep_alive);
    }

    #[test]
    fn every_strict_prefix_of_a_valid_request_is_incomplete() {
        let crlf: &[u8] = b"\r\nPOST /submit?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
        let lf: &[u8] = b"\nPOST /submit?x=1 HTTP/1.1\nHost: h\nContent-Length: 3\n\n";
        for buf in [crlf, lf] {
            for n in 0..buf.len() {
                assert_eq!(parse(&buf[..n]), Ok(Parse::Incomplete), "prefix {n}");
            }
            let (req, len) = complete(buf);
            assert_eq!(len, buf.len());
            assert_eq!(req.content_length, 3);
        }
    }

    #[test]
    fn pipelined_requests_parse_one_after_the_other() {
        let buf =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\nGET /c";
        let (first, len) = complete(buf);
        assert_eq!(first.target, "/a");
        let rest = &buf[len + first.content_length as usize..];
        let (second, len) = complete(rest);
        assert_eq!(second.target, "/b");
        assert_eq!(parse(&rest[len..]), Ok(Parse::Incomplete));
    }

    #[test]
    fn bytes_after_the_head_are_not_examined() {
        let (_, len) = complete(b"GET / HTTP/1.1\r\n\r\n\0\r\x16garbage");
        assert_eq!(len, 18);
    }

    #[test]
    fn bare_lf_is_accepted() {
        let buf = b"GET / HTTP/1.1\nHost: x\r\nConnection: close\n\n";
        let (req, len) = complete(buf);
        assert_eq!(len, buf.len());
        assert!(!req.keep_alive);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (req, len) = complete(buf);
        assert_eq!(len, buf.len());
        assert_eq!(req.method, "GET");
    }

    #[test]
    fn leading_empty_lines_count_toward_the_limit() {
        let buf = b"\r\n".repeat(MAX_HEAD / 2);
        assert_eq!(parse(&buf), Err(ParseError::HeadersTooLarge));
    }

    #[test]
    fn bare_cr_is_rejected() {
        bad(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\n\r\r\n");
        bad(b"GET\r/ HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn trailing_cr_without_lf_yet_is_incomplete() {
        assert_eq!(parse(b"GET / HTTP/1.1\r"), Ok(Parse::Incomplete));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r"), Ok(Parse::Incomplete));
    }

    #[test]
    fn content_length_is_parsed() {
        let (req, _) = complete(b"PUT /x HTTP/1.1\r\ncontent-length:  1234 \r\n\r\n");
        assert_eq!(req.content_length, 1234);
        let (req, _) = complete(b"PUT /x HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(req.content_length, u64::MAX);
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n");
    }

    #[test]
    fn identical_content_lengths_are_accepted() {
        let (req, _) =
            complete(b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(req.content_length, 7);
        let (req, _) = complete(b"POST / HTTP/1.1\r\nContent-Length: 7 ,7,\t7\r\n\r\n");
        assert_eq!(req.content_length, 7);
    }

    #[test]
    fn malformed_content_lengths_are_rejected() {
        for value in [
            &b"abc"[..],
            b"+5",
            b"-5",
            b"5 5",
            b"0x10",
            b"",
            b"5,",
            b"1.0",
            b"18446744073709551616",
            b"99999999999999999999999",
        ] {
            let mut buf = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n\r\n");
            bad(&buf);
        }
    }

    #[test]
    fn transfer_encoding_is_not_implemented() {
        let not_implemented = |buf: &[u8]| {
            assert_eq!(parse(buf), Err(ParseError::NotImplemented), "input {buf:?}");
        };
        not_implemented(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        not_implemented(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        not_implemented(b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n");
        // With a Content-Length too: the coding wins (RFC 9112 §6.3), still unimplemented.
        not_implemented(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        // HTTP/1.0 has no transfer codings: faulty framing.
        bad(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        // A malformed field elsewhere in the head is a 400 first.
        bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n");
        // Header values are judged once the head is complete.
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"),
            Ok(Parse::Incomplete)
        );
    }

    #[test]
    fn obs_fold_is_rejected() {
        bad(b"GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n");
    }

    #[test]
    fn whitespace_before_colon_is_rejected() {
        bad(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n");
    }

    #[test]
    fn malformed_header_names_are_rejected() {
        bad(b"GET / HTTP/1.1\r\n: x\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nBad(Name): x\r\n\r\n");
    }

    #[test]
    fn control_bytes_in_values_are_rejected() {
        bad(b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nX-A: a\x01\r\n\r\n");
    }

    #[test]
    fn obs_text_and_tabs_in_values_are_accepted() {
        let (req, _) =
            complete(b"GET / HTTP/1.1\r\nX-A:\t\xc3\xa9t\xe9 \x80\xff\t\r\nX-B:\r\n\r\n");
        assert!(req.keep_alive);
    }

    #[test]
    fn bad_versions_are_rejected() {
        for line in [
            &b"GET / HTTP/2.0"[..],
            b"GET / HTTP/1.2",
            b"GET / http/1.1",
            b"GET / HTTP/1.1 ",
            b"GET / HTTP/1",
            b"GET /",
            b"GET / ",
            b"GET",
        ] {
            let mut buf = line.to_vec();
            buf.extend_from_slice(b"\r\n\r\n");
            bad(&buf);
        }
    }

    #[test]
    fn double_space_in_request_line_is_rejected() {
        bad(b"GET  / HTTP/1.1\r\n\r\n");
        bad(b"GET /  HTTP/1.1\r\n\r\n");
        bad(b" GET / HTTP/1.1\r\n\r\n");
        bad(b"GET\t/ HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn bad_method_or_target_is_rejected() {
        bad(b"G(T / HTTP/1.1\r\n\r\n");
        bad(b"GET /a\x7fb HTTP/1.1\r\n\r\n");
        bad(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn unusual_but_valid_request_lines_are_accepted() {
        let (req, _) = complete(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(req.target, "*");
        let (req, _) = complete(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
        assert_eq!(req.method, "CONNECT");
        let (req, _) = complete(b"M-SEARCH http://h/p?q=%20#f HTTP/1.1\r\n\r\n");
        assert_eq!(req.target, "http://h/p?q=%20#f");
    }

    #[test]
    fn syntax_errors_are_reported_before_the_head_is_complete() {
        bad(b"GET / HTTP/9.9\r\n");
        bad(b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: y");
    }

    #[test]
    fn syntax_errors_in_an_unterminated_line_are_reported_at_once() {
        bad(b"GET / HTTP/9.9");
        bad(b"GET / HTTP/1.1\r\nBad Hea");
        bad(b"\x16\x03\x01\x02\x00");
        // A line that can still become valid is not judged.
        assert_eq!(parse(b"GET / HTTP/1."), Ok(Parse::Incomplete));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nGood-Hea"), Ok(Parse::Incomplete));
        assert_eq!(parse(b"GET /caf\xc3"), Ok(Parse::Incomplete));
    }

    #[test]
    fn oversized_head_is_rejected_while_still_incomplete() {
        let mut buf = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        buf.resize(9000, b'a');
        assert_eq!(parse(&buf), Err(ParseError::HeadersTooLarge));
        assert_eq!(parse(&buf[..MAX_HEAD]), Err(ParseError::HeadersTooLarge));
        assert_eq!(parse(&buf[..MAX_HEAD - 1]), Ok(Parse::Incomplete));
    }

    /// A complete request head of exactly `len` bytes, padded by one header.
    fn head_of_len(len: usize) -> Vec<u8> {
        let mut buf = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        buf.resize(len - 4, b'a');
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(buf.len(), len);
        buf
    }

    #[test]
    fn head_exactly_at_limit_is_accepted() {
        let mut buf = head_of_len(MAX_HEAD);
        let (_, len) = complete(&buf);
        assert_eq!(len, MAX_HEAD);
        // Body bytes beyond the limit do not matter.
        buf.extend_from_slice(b"body");
        let (_, len) = complete(&buf);
        assert_eq!(len, MAX_HEAD);
    }

    #[test]
    fn complete_head_over_limit_is_rejected() {
        let buf = head_of_len(MAX_HEAD + 1);
        assert_eq!(parse(&buf), Err(ParseError::HeadersTooLarge));
    }

    fn with_headers(n: usize) -> Vec<u8> {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf
    }

    #[test]
    fn max_headers_accepted() {
        let mut buf = with_headers(MAX_HEADERS);
        buf.extend_from_slice(b"\r\n");
        complete(&buf);
    }

    #[test]
    fn too_many_headers_are_rejected() {
        let mut buf = with_headers(MAX_HEADERS + 1);
        assert_eq!(parse(&buf), Err(ParseError::HeadersTooLarge));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(parse(&buf), Err(ParseError::HeadersTooLarge));
    }

    #[test]
    fn tls_client_hello_is_rejected() {
        bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n");
        bad(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n");
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    #[test]
    fn pseudo_random_inputs_never_panic_and_stay_consistent() {
        const REQUEST_LINES: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"POST /x?y=1 HTTP/1.0\n",
            b"\r\nOPTIONS * HTTP/1.1\r\n",
        ];
        // Harmless lines first: bulk heads draw only from those, so that they
        // reach the limits instead of an early 400.
        const HEADER_LINES: &[&[u8]] = &[
            b"Host: example.com\r\n",
            b"connection: close\r\n",
            b"Connection: keep-alive\n",
            b"X-Empty:\r\n",
            b"X-Obs: \x80\xff\t\r\n",
            b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 6\r\n",
            b"Content-Length: 18446744073709551616\r\n",
            b"Transfer-Encoding: chunked\r\n",
        ];
        const HARMLESS: usize = 6;
        const PIECES: &[&[u8]] = &[
            b"GET",
            b" ",
            b"/",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n\r\n",
            b":",
            b"\t",
            b"\0",
            b"\x80\xff",
            b",",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            buf.clear();
            if rng.below(2) == 0 {
                // Mostly well-formed: request line, header lines (now and then
                // a great many, to reach the limits), usually the blank line,
                // then a few bytes mutated.
                buf.extend_from_slice(REQUEST_LINES[rng.below(REQUEST_LINES.len())]);
                let (headers, kinds) = if rng.below(30) == 0 {
                    (90 + rng.below(100), HARMLESS)
                } else {
                    (rng.below(6), HEADER_LINES.len())
                };
                for _ in 0..headers {
                    buf.extend_from_slice(HEADER_LINES[rng.below(kinds)]);
                }
                if rng.below(4) != 0 {
                    buf.extend_from_slice(b"\r\n");
                }
                for _ in 0..rng.below(3) {
                    let at = rng.below(buf.len());
                    buf[at] = rng.next().to_le_bytes()[0];
                }
            } else {
                // Soup of protocol pieces and random bytes.
                for _ in 0..rng.below(24) {
                    if rng.below(4) == 0 {
                        for _ in 0..=rng.below(8) {
                            buf.push(rng.next().to_le_bytes()[0]);
                        }
                    } else {
                        buf.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                    }
                }
            }
            // A few more pieces: after a complete head they stand for a body or
            // the next request, which must not change the verdict.
            for _ in 0..rng.below(4) {
                buf.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }

            let result = parse(&buf);
            match &result {
                Ok(Parse::Complete { head_len, request }) => {
                    assert!(*head_len > 0 && *head_len <= buf.len() && *head_len <= MAX_HEAD);
                    // The head alone parses to the same thing.
                    let again = parse(&buf[..*head_len]);
                    assert_eq!(
                        again,
                        Ok(Parse::Complete {
                            request: request.clone(),
                            head_len: *head_len
                        })
                    );
                }
                Ok(Parse::Incomplete) => assert!(buf.len() < MAX_HEAD),
                Err(_) => {}
            }
            // A prefix that already got a verdict must agree with the full input.
            let cut = rng.below(buf.len() + 1);
            let prefix = parse(&buf[..cut]);
            if prefix != Ok(Parse::Incomplete) {
                assert_eq!(prefix, result, "prefix {cut} of {buf:?}");
            }
        }
    }
}
