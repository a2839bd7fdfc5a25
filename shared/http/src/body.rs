use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::ApiError;
use chartsync_store::CommitMeta;

/// How much of a refused body is still read and thrown away, so that the
/// client (still sending) gets to read the 413 instead of a reset
/// connection ("lingering close"). Bigger bodies are cut off.
const LINGER_BYTES: usize = 64 << 20;

/// Reads and discards up to [`LINGER_BYTES`] of `body` in the background.
fn linger(body: Body) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            axum::body::to_bytes(body, LINGER_BYTES),
        )
        .await;
    });
}

/// Time any body gets, whatever its size.
const BODY_BASE_SECS: u64 = 30;
/// The slowest transfer rate a body is given time for (about 64 kbit/s):
/// a slower client is cut off, so no client can hold a connection and its
/// buffer by trickling bytes.
const BODY_MIN_BYTES_PER_SEC: u64 = 8 << 10;

/// The deadline for reading a body of `length` bytes (or of up to `limit`
/// when its length is not declared).
pub fn body_deadline(length: Option<u64>, limit: usize) -> std::time::Duration {
    let bytes = length.unwrap_or(limit as u64).min(limit as u64);
    std::time::Duration::from_secs(BODY_BASE_SECS + bytes / BODY_MIN_BYTES_PER_SEC)
}

/// Reads a request body of at most `limit` bytes: refused with 413 from its
/// `Content-Length` before reading, or as soon as the stream passes the
/// limit; 408 when it does not arrive within [`body_deadline`].
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        if length <= (limit + LINGER_BYTES) as u64 {
            linger(body);
        }
        return Err(too_large());
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let deadline = body_deadline(length, limit);
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s; send it faster or in smaller batches",
                    deadline.as_secs()
                ),
            )
        })?;
    read.map_err(|e| {
        // to_bytes reports the limit as a "length limit exceeded" error
        // wrapped in the body error; anything else is a broken connection.
        let text = format!("{e:?}");
        if text.contains("LengthLimit") {
            too_large()
        } else {
            ApiError::bad_request("bad_body", format!("could not read the request body: {e}"))
        }
    })
}

/// The author and message of a write, from the optional
/// `Chartsync-Author: Name <email>` and `Chartsync-Message` headers.
pub fn author_from_headers(
    headers: &HeaderMap,
    default_name: &str,
    default_message: &str,
) -> Result<CommitMeta, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim().to_string())).map_err(|_| {
                ApiError::bad_request("bad_header", format!("{name} must be ASCII text"))
            }),
        }
    };
    let (name, email) = match text("chartsync-author")? {
        None => (
            default_name.to_string(),
            format!("{default_name}@localhost"),
        ),
        Some(author) => parse_author(&author).ok_or_else(|| {
            ApiError::bad_request(
                "bad_header",
                "Chartsync-Author must look like: Dr. Ada Obi <ada.obi@clinic.example>",
            )
        })?,
    };
    let message = text("chartsync-message")?.unwrap_or_else(|| default_message.to_string());
    if message.len() > 4096 || message.contains('\0') {
        return Err(ApiError::bad_request(
            "bad_header",
            "Chartsync-Message must be at most 4096 bytes of text",
        ));
    }
    Ok(CommitMeta {
        author_name: name,
        author_email: email,
        message,
    })
}

fn parse_author(s: &str) -> Option<(String, String)> {
    let (name, rest) = s.split_once('<')?;
    let email = rest.strip_suffix('>')?;
    let name = name.trim();
    let ok = |t: &str| !t.is_empty() && t.len() <= 200 && !t.contains(['<', '>', '\n', '\0']);
    (ok(name) && ok(email)).then(|| (name.to_string(), email.to_string()))
}

/// Parses a JSON request body that must be an object (serde would also
/// take a struct's fields given as an array, in order: a client sending
/// `["<id>", "<hash>"]` means something else, or nothing, and is told so).
/// Parsed straight into `T`, so serde's own checks (a field given twice,
/// unknown fields) still apply.
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first.is_some_and(|b| *b != b'{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{json_object, parse_author};

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        a: String,
        b: u32,
    }

    #[test]
    fn json_bodies_are_objects_checked_by_serde() {
        let pair = Pair {
            a: "x".into(),
            b: 1,
        };
        assert_eq!(json_object::<Pair>(br#"{"a": "x", "b": 1}"#), Ok(pair));
        let pair = Pair {
            a: "x".into(),
            b: 1,
        };
        assert_eq!(
            json_object::<Pair>(b" \r\n\t{\"a\":\"x\",\"b\":1}"),
            Ok(pair)
        );
        for bad in [
            &br#"["x", 1]"#[..],
            br#"  ["x", 1]"#,
            br#"{"a": "x", "b": 1, "a": "y"}"#,
            br#"{"a": "x", "b": 1, "c": 2}"#,
            br#"{"a": "x"}"#,
            b"null",
            b"",
            b"\xef\xbb\xbf{\"a\": \"x\", \"b\": 1}",
        ] {
            assert!(
                json_object::<Pair>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parses_authors() {
        assert_eq!(
            parse_author("Dr. Ada Obi <ada@c.example>"),
            Some(("Dr. Ada Obi".into(), "ada@c.example".into()))
        );
        assert_eq!(parse_author("nobody"), None);
        assert_eq!(parse_author("<a@b>"), None);
        assert_eq!(parse_author("A <a<b>"), None);
    }
}
