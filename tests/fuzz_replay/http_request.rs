//! The example HTTP server's request-head parser (`examples/http/request.rs`: httparse for
//! the syntax, the server's own policy on top) on arbitrary bytes, checked against its
//! documented rules and an independent scan for the head's end. The fuzz crate needs
//! httparse as a dependency for this include, as the main crate has it as a dev-dependency.

#[path = "../../examples/http/request.rs"]
#[allow(dead_code)]
mod request;

use request::{MAX_HEAD, MAX_HEADERS, Parse, ParseError, parse};

/// Where the head ends by the framing rules alone (leading empty lines skipped, then the
/// first empty line; LF or CRLF endings), looking at the first `MAX_HEAD` bytes only; and
/// how many header lines the complete lines before that end (or before the window's end)
/// hold.
fn reference_head_end(buf: &[u8]) -> (Option<usize>, usize) {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut pos = 0;
    let mut seen_start = false;
    let mut headers = 0;
    for line in window.split_inclusive(|&b| b == b'\n') {
        if line.last() != Some(&b'\n') {
            break; // unterminated last line: never judged
        }
        pos += line.len();
        let body = &line[..line.len() - 1];
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() {
            if seen_start {
                return (Some(pos), headers);
            }
        } else if seen_start {
            headers += 1;
        } else {
            seen_start = true;
        }
    }
    (None, headers)
}

/// Parses `buf` and checks every rule that can be checked from the outside.
fn check(buf: &[u8]) -> Result<Parse, ParseError> {
    let result = parse(buf);
    let (reference, headers) = reference_head_end(buf);
    match &result {
        Ok(Parse::Incomplete) => {
            assert!(
                buf.len() < MAX_HEAD,
                "Incomplete with {} >= MAX_HEAD bytes",
                buf.len()
            );
            assert_eq!(
                reference, None,
                "Incomplete although the head ends at {reference:?}"
            );
        }
        Ok(Parse::Complete { request, head_len }) => {
            let head_len = *head_len;
            assert!(
                head_len <= buf.len(),
                "head_len {head_len} > buffer {}",
                buf.len()
            );
            assert!(head_len <= MAX_HEAD, "head_len {head_len} > MAX_HEAD");
            assert_eq!(
                reference,
                Some(head_len),
                "head_len disagrees with the framing"
            );
            assert!(headers <= MAX_HEADERS, "more than MAX_HEADERS accepted");
            assert_eq!(
                buf[head_len - 1],
                b'\n',
                "head does not end with a line feed"
            );
            assert!(!request.method.is_empty() && !request.target.is_empty());
            assert!(request.target.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            // The head alone parses to the same request; bytes after it are never looked at.
            let again = parse(&buf[..head_len]);
            assert_eq!(
                again,
                Ok(Parse::Complete {
                    request: request.clone(),
                    head_len
                }),
                "re-parsing the head alone differs"
            );
            let mut extended = buf[..head_len].to_vec();
            extended.extend_from_slice(b"\r\x00\n\n garbage");
            assert_eq!(
                parse(&extended),
                again,
                "bytes after the head changed the result"
            );
            // One byte short of the head end is a prefix of a valid head: Incomplete.
            assert_eq!(
                parse(&buf[..head_len - 1]),
                Ok(Parse::Incomplete),
                "strict prefix of a head"
            );
        }
        Err(ParseError::HeadersTooLarge) => {
            // Either the head does not end within MAX_HEAD bytes, or it has too many fields.
            assert!(
                headers > MAX_HEADERS || (reference.is_none() && buf.len() >= MAX_HEAD),
                "431 for a head within both limits ({headers} fields, {} bytes)",
                buf.len()
            );
        }
        Err(ParseError::NotImplemented) => {
            // Only a complete head can say it has a Transfer-Encoding.
            assert!(reference.is_some(), "501 before the head ended");
        }
        Err(ParseError::BadRequest) => {}
    }
    if let Err(e) = &result {
        let status = match e {
            ParseError::BadRequest => 400,
            ParseError::HeadersTooLarge => 431,
            ParseError::NotImplemented => 501,
        };
        assert_eq!(e.status(), status);
    }
    // A head that fits but has not ended within an over-long buffer is a 431, never Incomplete.
    if buf.len() >= MAX_HEAD && reference.is_none() {
        assert!(
            result.is_err(),
            "{} bytes without a head end must be an error",
            buf.len()
        );
    }
    result
}

pub fn replay(data: &[u8]) {
    // Short inputs are also tried repeated to cross MAX_HEAD, so libFuzzer's default length
    // limit does not hide the size rules: the first byte says how many times.
    let full = match data.split_first() {
        Some((&n, rest)) if n >= 0xf0 && !rest.is_empty() => {
            let times = (MAX_HEAD / rest.len() + 2).min(64 * 1024 / rest.len().max(1));
            rest.repeat(times.max(1))
        }
        _ => data.to_vec(),
    };
    let result = check(&full);
    // Stability: an answer other than Incomplete never changes when more bytes arrive, so
    // every prefix that already has an answer must agree with the whole buffer's.
    for cut in [full.len() / 2, full.len() / 3, full.len().saturating_sub(1)] {
        let prefix = check(&full[..cut]);
        if prefix != Ok(Parse::Incomplete) {
            assert_eq!(
                prefix, result,
                "prefix of {cut} bytes answered differently than the whole buffer"
            );
        }
    }
}
