//! Content negotiation for remote write: which `Content-Type` and
//! `Content-Encoding` a remote-write 1.0 request may carry. Absent headers
//! are accepted (as Prometheus does); anything else is refused with the
//! header named, so the HTTP layer answers 415.

use crate::error::IngestError;
use cairn_common::limits::truncate_str;

/// Bytes of a header value echoed back in an error message.
const ECHO_MAX: usize = 256;

/// Checks the `Content-Type` and `Content-Encoding` header values (as
/// sent; compared case-insensitively) of a remote-write request.
pub fn check_write_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), IngestError> {
    let shown = |s: &str| truncate_str(s, ECHO_MAX).into_owned();
    if let Some(ct) = content_type.map(str::to_ascii_lowercase) {
        let mut parts = ct.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/x-protobuf" {
            return Err(IngestError::ContentType(shown(media)));
        }
        if let Some(proto) = parts.find_map(|p| p.strip_prefix("proto=")) {
            if proto != "prometheus.writerequest" {
                return Err(IngestError::MessageType(shown(proto)));
            }
        }
    }
    if let Some(enc) = content_encoding.map(str::to_ascii_lowercase) {
        if enc != "snappy" {
            return Err(IngestError::ContentEncoding(shown(&enc)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_1_0_is_accepted_and_the_rest_named() {
        for (ct, enc) in [
            (None, None),
            (Some("application/x-protobuf"), Some("snappy")),
            (
                Some("Application/X-Protobuf; proto=prometheus.WriteRequest"),
                Some("SNAPPY"),
            ),
        ] {
            assert_eq!(check_write_headers(ct, enc), Ok(()), "{ct:?} {enc:?}");
        }
        let e = check_write_headers(Some("application/json"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported Content-Type \"application/json\": remote write expects application/x-protobuf"
        );
        let e = check_write_headers(
            Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("remote write 1.0"), "{e}");
        let e = check_write_headers(None, Some("gzip")).unwrap_err();
        assert!(e.to_string().contains("expects snappy"), "{e}");
        let long = "x".repeat(10_000);
        let e = check_write_headers(Some(&long), None).unwrap_err();
        assert!(e.to_string().len() < ECHO_MAX + 100, "{e}");
    }
}
