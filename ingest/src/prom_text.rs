//! The Prometheus text exposition format and OpenMetrics, for scraping.
