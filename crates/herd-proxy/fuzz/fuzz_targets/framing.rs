//! Arbitrary header sets (duplicate or conflicting `Content-Length` / `Transfer-Encoding`,
//! obsolete line folding, odd whitespace, chunked bodies with extensions and trailers), split
//! into arbitrary reads, go through the request-smuggling guard: it must flag or pass each
//! connection, never panic or loop.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Request {
    method: u8,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    requests: Vec<Request>,
    /// Where the byte stream is cut into reads.
    cuts: Vec<u16>,
    raw_tail: Vec<u8>,
}

const NAMES: [&[u8]; 8] = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"content-length ",
    b"Host",
    b"Connection",
    b"Upgrade",
    b"Trailer",
    b"X-Other",
];
const METHODS: [&[u8]; 4] = [b"GET", b"POST", b"PUT", b"CONNECT"];

fuzz_target!(|input: Input| {
    if input.requests.len() > 8 {
        return;
    }
    let mut bytes = Vec::new();
    for r in &input.requests {
        bytes.extend_from_slice(METHODS[usize::from(r.method) % METHODS.len()]);
        bytes.extend_from_slice(b" / HTTP/1.1\r\n");
        for (n, v) in r.headers.iter().take(32) {
            bytes.extend_from_slice(NAMES[usize::from(*n) % NAMES.len()]);
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(v);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&r.body);
    }
    bytes.extend_from_slice(&input.raw_tail);
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest: &[u8] = &bytes;
    for &c in &input.cuts {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(usize::from(c).min(rest.len()));
        chunks.push(a);
        rest = b;
    }
    chunks.push(rest);
    let _ = herd_proxy::fuzz::framing(8 * 1024, &chunks);
});
