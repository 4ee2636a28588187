//! Scraping a target served from a test listener: target labels, report series, staleness when a
//! series disappears and when the target goes down; the self-scrape of `/metrics`.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost::config::RawScrapeTarget;

use crate::prom_util::{get, now_ms};
use crate::support::TestServer;

/// Serves `page` (or 500 when it is `None`) to every request, on a port-0 listener.
fn serve(page: Arc<Mutex<Option<String>>>) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let resp = match page.lock().unwrap().clone() {
                Some(p) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{p}",
                    p.len()
                ),
                None => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            };
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    addr
}

fn query(s: &TestServer, q: &str) -> Vec<serde_json::Value> {
    let t = format!("{}", now_ms() as f64 / 1000.0);
    let (st, body) = get(&s.http(), "/api/v1/query", &[("query", q), ("time", &t)]);
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().unwrap().clone()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn scrape_a_target() {
    let page = Arc::new(Mutex::new(Some(
        "# HELP temp Temperature.\n# TYPE temp gauge\ntemp{room=\"a\",job=\"inner\"} 21.5\ntemp{room=\"b\"} 19\n"
            .to_string(),
    )));
    let addr = serve(Arc::clone(&page));
    let s = TestServer::start(|c| {
        c.scrape.self_scrape = false;
        c.scrape.targets = vec![RawScrapeTarget {
            job: "sensors".into(),
            url: format!("http://{addr}/metrics"),
            interval: Some("1s".into()),
            timeout: Some("1s".into()),
            labels: [("site".to_string(), "lab".to_string())].into_iter().collect(),
            honor_labels: false,
        }];
    });
    let instance = addr.to_string();
    wait_for("up", || query(&s, "up").len() == 1);
    let up = &query(&s, "up")[0];
    assert_eq!(up["metric"], serde_json::json!({"__name__":"up","instance":instance,"job":"sensors","site":"lab"}));
    assert_eq!(up["value"][1], "1");
    let temps = query(&s, "temp");
    assert_eq!(temps.len(), 2);
    assert_eq!(
        temps[0]["metric"],
        serde_json::json!({"__name__":"temp","exported_job":"inner","instance":instance,"job":"sensors","room":"a","site":"lab"})
    );
    for name in [
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        assert_eq!(query(&s, name).len(), 1, "{name}");
    }
    assert_eq!(query(&s, "scrape_samples_scraped")[0]["value"][1], "2");
    // Metadata from the page.
    let (_, body) = get(&s.http(), "/api/v1/metadata", &[("metric", "temp")]);
    assert_eq!(body, r#"{"status":"success","data":{"temp":[{"type":"gauge","help":"Temperature.","unit":""}]}}"#);

    // The targets endpoint reports the target as up.
    let (_, body) = get(&s.http(), "/api/v1/targets", &[]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = &v["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{body}");
    assert_eq!(t["scrapePool"], "sensors");
    assert_eq!(t["labels"]["instance"], instance);
    assert_eq!(t["discoveredLabels"]["__metrics_path__"], "/metrics");
    assert_eq!(t["scrapeInterval"], "1s");

    // A series disappears: it is marked stale and instant queries stop returning it.
    *page.lock().unwrap() = Some("temp{room=\"a\",job=\"inner\"} 22\n".into());
    wait_for("room b stale", || query(&s, "temp").len() == 1);
    assert_eq!(query(&s, "temp")[0]["value"][1], "22");

    // The target fails: up = 0 and everything it exposed goes stale.
    *page.lock().unwrap() = None;
    wait_for("up 0", || query(&s, "up").first().is_some_and(|u| u["value"][1] == "0"));
    wait_for("all stale", || query(&s, "temp").is_empty());
    let (_, body) = get(&s.http(), "/api/v1/targets", &[]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["activeTargets"][0]["health"], "down", "{body}");
    assert!(v["data"]["activeTargets"][0]["lastError"].as_str().unwrap().contains("500"), "{body}");
}

#[test]
fn self_scrape_is_on_by_default() {
    let s = TestServer::start(|c| c.scrape.interval = "1s".into());
    wait_for("outpost up", || query(&s, "up{job=\"outpost\"}").first().is_some_and(|u| u["value"][1] == "1"));
    let up = &query(&s, "up{job=\"outpost\"}")[0];
    assert_eq!(up["metric"]["instance"], s.addrs.http.to_string());
}
