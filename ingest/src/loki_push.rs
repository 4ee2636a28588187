//! Loki push (`/loki/api/v1/push`, JSON and snappy protobuf) mapped to the logs model.
