//! `personas cite check` against an HTTP server in this test serving fixture
//! pages: a page with the quote, one without, a redirect to the first, a
//! 404, a slow page, a huge page and a PDF. The record it writes is read
//! back, and `--offline` reports the same from the record alone.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

const QUOTE: &str = "Nothing in life is to be feared, it is only to be understood.";

fn answer(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let page = |body: &str| (200, "text/html; charset=utf-8", body.as_bytes().to_vec(), None);
    let (status, content_type, body, location): (u16, &str, Vec<u8>, Option<&str>) = match path.as_str() {
        "/quote" => page(
            "<html><head><script>var q = 'decoy';</script></head><body><p>She wrote: \
             &ldquo;Nothing in life is <em>to be feared</em>, it is only to be understood.&rdquo;</p></body></html>",
        ),
        "/other" => page("<html><body><p>A page about something else entirely.</p></body></html>"),
        "/moved" => (301, "text/html", Vec::new(), Some("/quote")),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(4));
            page("<p>too late</p>")
        }
        "/huge" => (200, "text/html", vec![b'a'; 3_000_000], None),
        "/paper.pdf" => (200, "application/pdf", b"%PDF-1.4 ...".to_vec(), None),
        _ => (404, "text/html", b"<p>not here</p>".to_vec(), None),
    };
    let reason = match status {
        200 => "OK",
        301 => "Moved Permanently",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(location) = location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || answer(stream));
        }
    });
    base
}

/// A real person with one belief per fixture page.
fn registry(base: &str) -> RegistryDir {
    let directory = RegistryDir::new();
    let mut text = persona(ID_A, "Marie Test");
    let start = text.find("[[beliefs]]").unwrap();
    let end = text.find("[modes]").unwrap();
    let mut beliefs = String::new();
    for (index, path) in ["/quote", "/other", "/moved", "/missing", "/slow", "/huge", "/paper.pdf"]
        .iter()
        .enumerate()
    {
        let belief = if index == 0 || index == 2 {
            // The same quote twice (the redirect leads to it); beliefs must differ, so the second is a paraphrase.
            if index == 0 {
                QUOTE.to_string()
            } else {
                "Nothing in life is to be feared; it is only to be understood, she wrote.".to_string()
            }
        } else {
            format!("Belief number {index} about science and its methods.")
        };
        beliefs.push_str(&format!(
            "[[beliefs]]\ntext = \"{belief}\"\nsource = \"{base}{path}\"\n\n"
        ));
    }
    text.replace_range(start..end, &beliefs);
    directory.write("personas/marie-test.toml", &text);
    directory
}

fn check_of<'a>(record: &'a Value, path: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["url"].as_str().unwrap().ends_with(path))
        .unwrap_or_else(|| panic!("no check of {path}: {record}"))
}

#[test]
fn citations_are_fetched_searched_recorded_and_replayed_offline() {
    let base = serve();
    let directory = registry(&base);
    let root = directory.path().to_str().unwrap().to_string();
    let (code, out, errors) = personas(
        &[
            "cite",
            "check",
            "--registry",
            &root,
            "--timeout",
            "1",
            "--max-bytes",
            "1000000",
        ],
        directory.path(),
    );
    assert_eq!(code, 1, "{out}{errors}");
    assert!(errors.contains("7 citations by URL: 2 hold, 5 do not"), "{errors}{out}");

    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(directory.path().join("citations.json")).unwrap()).unwrap();
    let quote = check_of(&record, "/quote");
    assert_eq!(
        (quote["outcome"].as_str(), quote["found"].as_str()),
        (Some("checked"), Some("verbatim"))
    );
    assert!(quote["digest"].as_str().unwrap().starts_with("sha256:"));
    let moved = check_of(&record, "/moved");
    assert_eq!(moved["final_url"], format!("{base}/quote"));
    assert_eq!(
        (moved["status"].as_u64(), moved["found"].as_str()),
        (Some(200), Some("words"))
    );
    assert_eq!(check_of(&record, "/other")["found"], "not_found");
    let missing = check_of(&record, "/missing");
    assert_eq!(
        (missing["outcome"].as_str(), missing["status"].as_u64()),
        (Some("dead"), Some(404))
    );
    let slow = check_of(&record, "/slow");
    assert_eq!(
        (slow["outcome"].as_str(), slow["detail"].as_str()),
        (Some("unreachable"), Some("timed out"))
    );
    assert_eq!(check_of(&record, "/huge")["outcome"], "too_large");
    let pdf = check_of(&record, "/paper.pdf");
    assert_eq!(
        (pdf["outcome"].as_str(), pdf["content_type"].as_str()),
        (Some("not_text"), Some("application/pdf"))
    );

    // Each problem at the line of its source.
    let text = std::fs::read_to_string(directory.path().join("personas/marie-test.toml")).unwrap();
    for (path, words) in [
        ("/other", "is not on"),
        ("/missing", "dead link"),
        ("/slow", "could not be reached: timed out"),
        ("/huge", "larger than the size cap"),
        ("/paper.pdf", "application/pdf"),
    ] {
        let url = format!("{base}{path}\"");
        let (line, column) = locate(&text, &url);
        let expected = format!("marie-test.toml:{line}:{column}: citation: ");
        let reported = out
            .lines()
            .find(|reported| reported.contains(&expected))
            .unwrap_or_else(|| panic!("no problem at {expected} in {out}"));
        assert!(reported.contains(words), "{reported}");
    }
    assert!(!out.contains("/quote\""), "a holding citation was reported: {out}");

    // Offline: the same report from the record, nothing fetched or rewritten.
    let written = std::fs::read(directory.path().join("citations.json")).unwrap();
    let (offline_code, offline_out, offline_errors) =
        personas(&["cite", "check", "--registry", &root, "--offline"], directory.path());
    assert_eq!(offline_code, 1, "{offline_errors}");
    assert_eq!(offline_out, out);
    assert!(offline_errors.contains("offline"), "{offline_errors}");
    assert_eq!(std::fs::read(directory.path().join("citations.json")).unwrap(), written);

    // A belief added since the record: not checked yet, offline.
    let added = text.replace(
        "[modes]",
        &format!("[[beliefs]]\ntext = \"A new claim.\"\nsource = \"{base}/quote\"\n\n[modes]"),
    );
    directory.write("personas/marie-test.toml", &added);
    let (_, offline_out, _) = personas(&["cite", "check", "--registry", &root, "--offline"], directory.path());
    assert!(offline_out.contains("has not been checked yet"), "{offline_out}");
}
