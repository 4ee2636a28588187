//! Prometheus remote write v1 (snappy-compressed protobuf) mapped to the metrics model.
