//! The `/dashboard` page rendered by a real browser: headless Chromium (Debian's `chromium`)
//! screenshots it after real requests spread over three days, and the charts' colours must
//! cover real areas of the image.

mod common;

use std::process::Command;

use common::server::Server;
use serde_json::json;

const SAVED: [u8; 3] = [0x2e, 0x7d, 0x32];
const REQUESTS: [u8; 3] = [0x15, 0x65, 0xc0];
const LOCAL: [u8; 3] = [0xef, 0x6c, 0x00];
const CLOUD: [u8; 3] = [0x6a, 0x1b, 0x9a];

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return name.to_owned();
        }
    }
    panic!("no Chromium found; install it with: apt-get install -y --no-install-recommends chromium (.ci/run does)");
}

/// Pixels of exactly each colour in an RGB(A) PNG.
fn count_colours(png_path: &std::path::Path, colours: &[[u8; 3]]) -> Vec<usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert!(step >= 3, "colour screenshot expected, got {:?}", info.color_type);
    let mut counts = vec![0; colours.len()];
    for px in buf[..info.buffer_size()].chunks(step) {
        if let Some(i) = colours.iter().position(|c| px[..3] == c[..]) {
            counts[i] += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_its_charts_with_data_in_chromium() {
    let browser = chromium();
    let s = Server::smollm2().await;
    let mut ids = Vec::new();
    for p in ["def add(a, b):", "fn main() {", "SELECT * FROM", "#include <stdio.h>", "class Point:", "let x ="] {
        let (status, _, a) = s.post("/v1/completions", &json!({ "prompt": p, "max_tokens": 12, "temperature": 0 })).await;
        assert_eq!(status, 200, "{a}");
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    // Spread the real rows over three days, so the charts have a history to draw.
    let db = rusqlite::Connection::open(s.ledger.describe()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let days_back = [2, 2, 1, 0, 0, 0][i];
        db.execute("UPDATE requests SET ts_ms = ts_ms - ?1 WHERE id = ?2", rusqlite::params![days_back * 86_400_000i64, id]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("dashboard.png");
    let out = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("{}/dashboard", s.url))
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let [saved, requests, local, cloud] = count_colours(&shot, &[SAVED, REQUESTS, LOCAL, CLOUD])[..] else { unreachable!() };
    // Three days of cumulative savings (a line with markers), three request bars, and local and
    // cloud bars per model (the legend's swatches are 144 pixels each).
    assert!(saved > 400, "cumulative savings line: {saved} pixels");
    assert!(requests > 5000, "requests-per-day bars: {requests} pixels");
    assert!(cloud > 3000, "cloud cost bar: {cloud} pixels");
    // Local costs are tiny beside the cloud's: their bars are short, some only a few pixels high.
    assert!(local > 144 + 100, "local cost bar: {local} pixels");
}
