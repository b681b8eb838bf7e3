//! `cairn-proto`: wire types of the protocols Cairn speaks.
//!
//! Owns: Prometheus remote-write 1.0 and remote-read messages (package
//! `prometheus`, see `proto/prometheus/*.proto` for the schema these structs
//! mirror). They are written by hand with `prost` derives so the build needs
//! no `protoc`. Label names and values are kept as bytes so a non-UTF-8 label
//! fails validation of its own series instead of the whole request.
//!
//! Must never depend on: anything but `prost`.

pub mod prompb {
    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct MetricMetadata {
        /// `MetricMetadata.MetricType`: 0 unknown, 1 counter, 2 gauge,
        /// 3 histogram, 4 gaugehistogram, 5 summary, 6 info, 7 stateset.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    #[derive(Clone, Copy, PartialEq, ::prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
        /// Native histograms, kept undecoded: Cairn counts and refuses them.
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub histograms: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Label {
        #[prost(bytes = "vec", tag = "1")]
        pub name: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    impl Label {
        pub fn new(name: &str, value: &str) -> Self {
            Self {
                name: name.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            }
        }
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LabelMatcher {
        /// 0 EQ, 1 NEQ, 2 RE, 3 NRE.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ReadHints {
        #[prost(int64, tag = "1")]
        pub step_ms: i64,
        #[prost(string, tag = "2")]
        pub func: String,
        #[prost(int64, tag = "3")]
        pub start_ms: i64,
        #[prost(int64, tag = "4")]
        pub end_ms: i64,
        #[prost(string, repeated, tag = "5")]
        pub grouping: Vec<String>,
        #[prost(bool, tag = "6")]
        pub by: bool,
        #[prost(int64, tag = "7")]
        pub range_ms: i64,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Query {
        #[prost(int64, tag = "1")]
        pub start_timestamp_ms: i64,
        #[prost(int64, tag = "2")]
        pub end_timestamp_ms: i64,
        #[prost(message, repeated, tag = "3")]
        pub matchers: Vec<LabelMatcher>,
        #[prost(message, optional, tag = "4")]
        pub hints: Option<ReadHints>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ReadRequest {
        #[prost(message, repeated, tag = "1")]
        pub queries: Vec<Query>,
        /// 0 SAMPLES, 1 STREAMED_XOR_CHUNKS.
        #[prost(int32, repeated, tag = "2")]
        pub accepted_response_types: Vec<i32>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct QueryResult {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ReadResponse {
        #[prost(message, repeated, tag = "1")]
        pub results: Vec<QueryResult>,
    }
}

#[cfg(test)]
mod tests {
    use super::prompb::*;
    use prost::Message;

    #[test]
    fn write_request_round_trips() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up")],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1000,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), req);
        assert!(WriteRequest::decode(&b"\xff\xff\xff"[..]).is_err());
    }
}
