//! pprof profiles (and Pyroscope ingest formats) mapped to the profiles model.
