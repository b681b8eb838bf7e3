//! Prometheus remote read (SAMPLES response type): decoding a
//! snappy-compressed `prometheus.ReadRequest` into matchers and time
//! ranges, and encoding the snappy-compressed `prometheus.ReadResponse`.
//! The HTTP layer only moves bytes and picks the status code.

use crate::error::IngestError;
use crate::validate::decompress;
use cairn_common::{Labels, MatchOp, Matcher, Sample};
use cairn_proto::prompb;
use prost::Message;

/// One remote-read query: matchers and the time range (ms, inclusive).
pub type ReadQuery = (Vec<Matcher>, i64, i64);

/// Decodes a remote-read body (snappy-compressed `prometheus.ReadRequest`,
/// at most `max_decoded` bytes decompressed) into its queries. Every query
/// has a matcher that does not match the empty string. Errors are
/// [`IngestError::ReadBody`] (the body does not decompress; too large when
/// [`IngestError::is_too_large`]) or [`IngestError::ReadRequest`].
pub fn decode_read_request(body: &[u8], max_decoded: usize) -> Result<Vec<ReadQuery>, IngestError> {
    let bad = IngestError::ReadRequest;
    let raw = decompress(body, max_decoded).map_err(|e| IngestError::ReadBody(Box::new(e)))?;
    let req = prompb::ReadRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("cannot decode ReadRequest: {e}")))?;
    if !req.accepted_response_types.is_empty() && !req.accepted_response_types.contains(&0) {
        return Err(bad(
            "only the SAMPLES response type is supported; add SAMPLES to accepted_response_types (STREAMED_XOR_CHUNKS is not implemented)".into(),
        ));
    }
    let mut queries = Vec::with_capacity(req.queries.len());
    for (i, q) in req.queries.iter().enumerate() {
        let mut ms = Vec::with_capacity(q.matchers.len());
        for m in &q.matchers {
            let op = match m.r#type {
                0 => MatchOp::Equal,
                1 => MatchOp::NotEqual,
                2 => MatchOp::RegexMatch,
                3 => MatchOp::RegexNoMatch,
                t => return Err(bad(format!("query {i}: unknown matcher type {t}"))),
            };
            ms.push(
                Matcher::new(op, m.name.clone(), m.value.clone())
                    .map_err(|e| bad(format!("query {i}: {e}")))?,
            );
        }
        if ms.is_empty() || ms.iter().all(|m| m.matches_empty()) {
            return Err(bad(format!(
                "query {i}: needs at least one matcher that does not match the empty string"
            )));
        }
        queries.push((ms, q.start_timestamp_ms, q.end_timestamp_ms));
    }
    Ok(queries)
}

/// Builds a `prometheus.ReadResponse`: one result per query, in order.
#[derive(Debug, Default)]
pub struct ReadResponseBuilder {
    results: Vec<prompb::QueryResult>,
    current: Vec<prompb::TimeSeries>,
}

impl ReadResponseBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one series to the current query's result.
    pub fn push_series(&mut self, labels: &Labels, samples: &[Sample]) {
        self.current.push(prompb::TimeSeries {
            labels: labels
                .iter()
                .map(|l| prompb::Label::new(&l.name, &l.value))
                .collect(),
            samples: samples
                .iter()
                .map(|x| prompb::Sample {
                    value: x.v,
                    timestamp: x.t,
                })
                .collect(),
            ..Default::default()
        });
    }

    /// Closes the current query's result; the next series start the next.
    pub fn finish_query(&mut self) {
        let timeseries = std::mem::take(&mut self.current);
        self.results.push(prompb::QueryResult { timeseries });
    }

    /// The snappy-compressed response body.
    pub fn encode(self) -> Result<Vec<u8>, IngestError> {
        let resp = prompb::ReadResponse {
            results: self.results,
        };
        snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .map_err(|e| IngestError::ReadResponse(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &prompb::ReadRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }

    fn query(matchers: Vec<prompb::LabelMatcher>) -> prompb::Query {
        prompb::Query {
            start_timestamp_ms: 1,
            end_timestamp_ms: 2,
            matchers,
            ..Default::default()
        }
    }

    fn matcher(kind: i32, name: &str, value: &str) -> prompb::LabelMatcher {
        prompb::LabelMatcher {
            r#type: kind,
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn requests_decode_or_name_what_is_wrong() {
        let ok = prompb::ReadRequest {
            queries: vec![query(vec![
                matcher(0, "__name__", "up"),
                matcher(2, "job", "a|b"),
            ])],
            ..Default::default()
        };
        let q = decode_read_request(&body(&ok), 1 << 20).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].1, q[0].2), (1, 2));
        assert_eq!(q[0].0[1].op, MatchOp::RegexMatch);

        let e = decode_read_request(b"not snappy", 1 << 20).unwrap_err();
        assert!(matches!(e, IngestError::ReadBody(_)), "{e}");
        assert!(!e.is_too_large());
        let e = decode_read_request(&body(&ok), 4).unwrap_err();
        assert!(e.is_too_large(), "{e}");
        assert!(e.to_string().starts_with("remote read: "), "{e}");

        let empty = prompb::ReadRequest {
            queries: vec![query(vec![matcher(0, "job", "")])],
            ..Default::default()
        };
        let e = decode_read_request(&body(&empty), 1 << 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "remote read: query 0: needs at least one matcher that does not match the empty string"
        );
        let unknown = prompb::ReadRequest {
            queries: vec![query(vec![matcher(9, "job", "a")])],
            ..Default::default()
        };
        let e = decode_read_request(&body(&unknown), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("unknown matcher type 9"), "{e}");
        let chunks = prompb::ReadRequest {
            queries: vec![query(vec![matcher(0, "job", "a")])],
            accepted_response_types: vec![1],
        };
        let e = decode_read_request(&body(&chunks), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("only the SAMPLES"), "{e}");
    }

    #[test]
    fn responses_round_trip() {
        let mut b = ReadResponseBuilder::new();
        let l = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        b.push_series(&l, &[Sample::new(1000, 1.5)]);
        b.finish_query();
        b.finish_query();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&b.encode().unwrap())
            .unwrap();
        let resp = prompb::ReadResponse::decode(raw.as_slice()).unwrap();
        assert_eq!(resp.results.len(), 2);
        assert!(resp.results[1].timeseries.is_empty());
        let ts = &resp.results[0].timeseries[0];
        assert_eq!(ts.labels.len(), 2);
        assert_eq!((ts.samples[0].timestamp, ts.samples[0].value), (1000, 1.5));
    }
}
