//! `lambda-eclipse decode` against the reference decoder server (server/, `--tiny-random` Kandinsky 2.2 decoder on
//! the CPU, embedding dimension 32 like the tiny λ model): `prior` writes the embeddings, `decode` sends them and
//! writes the image. Errors are one line: endpoint down, token refused, server-side validation, non-image reply.
//!
//! Needs the server's Python dependencies (`bash .ci/setup-python.sh`); without them the test fails and says so.

mod common;
use common::{bin, fails_clearly, ok, tiny_model};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-1234";

fn scratch(name: &str) -> PathBuf {
    common::scratch("decode_endpoint", name)
}

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Fails (never skips) when the Python side is not installed, naming the fix.
fn require_python_deps() {
    let out = Command::new("python3")
        .args(["-c", "import torch, diffusers, transformers, fastapi, uvicorn, safetensors, PIL"])
        .output();
    let problem = match out {
        Err(e) => format!("python3 cannot be run ({e})"),
        Ok(o) if !o.status.success() => {
            String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("import failed").to_string()
        }
        Ok(_) => return,
    };
    panic!(
        "the decoder server's Python dependencies are missing ({problem}): run `bash .ci/setup-python.sh` \
         (pip install -r server/requirements.txt) and test again"
    );
}

/// The tiny decoder server on a free loopback port; killed when dropped, whatever the test's outcome.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, extra_args: &[&str]) -> Server {
        require_python_deps();
        let port = free_port();
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("python3")
            .args(["-m", "lambda_decoder", "--tiny-random", "--device", "cpu", "--log-level", "warning"])
            .args(["--port", &port.to_string()])
            .args(extra_args)
            .current_dir(server_dir())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawn python3 -m lambda_decoder");
        let server = Server { child, url: format!("http://127.0.0.1:{port}"), log };
        server.wait_healthy(port, Duration::from_secs(180));
        server
    }

    /// Polls GET /v1/health until 200 (torch and diffusers take seconds to import on a busy machine).
    fn wait_healthy(&self, port: u16, timeout: Duration) {
        let start = Instant::now();
        loop {
            if health_status(port) == Some(200) {
                return;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            assert!(
                start.elapsed() < timeout,
                "the decoder server was not healthy after {timeout:?}; its log:\n{}",
                tail.join("\n")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of GET /v1/health over a raw HTTP/1.0 exchange (no client library needed), None if unreachable.
fn health_status(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /v1/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

fn prior_embeds(dir: &Path) -> PathBuf {
    let embeds = dir.join("embeds.safetensors");
    ok(bin()
        .args(["prior", "--model"])
        .arg(tiny_model())
        .args(["--prompt", "a cat wearing glasses", "--seed", "7", "--out"])
        .arg(&embeds)
        .output()
        .unwrap());
    embeds
}

fn decode(url: &str, embeds: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["decode", "--endpoint", url, "--embeds"]).arg(embeds).arg("--out").arg(out).args(extra);
    cmd.env_remove("LAMBDA_DECODER_TOKEN");
    cmd
}

#[test]
fn prior_then_decode_writes_the_requested_image() {
    let dir = scratch("roundtrip");
    let embeds = prior_embeds(&dir);
    let server = Server::start(&dir, &["--token", TOKEN]);
    let small = ["--token", TOKEN, "--steps", "2", "--width", "64", "--height", "128", "--seed", "11"];

    let png = dir.join("a.png");
    let out = ok(decode(&server.url, &embeds, &png, &small).output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("image/png") && stdout.contains("seed 11"), "{stdout}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (64, 128));

    // Same embeddings and seed → the same bytes; the token may come from the environment; a trailing
    // /v1/decode on the endpoint is accepted.
    let again = dir.join("b.png");
    let url = format!("{}/v1/decode", server.url);
    ok(decode(&url, &embeds, &again, &small[2..]).env("LAMBDA_DECODER_TOKEN", TOKEN).output().unwrap());
    assert_eq!(std::fs::read(&again).unwrap(), bytes);

    // The extension picks the format.
    let webp = dir.join("c.webp");
    ok(decode(&server.url, &embeds, &webp, &small).output().unwrap());
    assert_eq!(&std::fs::read(&webp).unwrap()[..4], b"RIFF");

    // The server's own validation message, in one line with its status.
    fails_clearly(
        // The tiny random decoder's MoVQ downsamples by 2: sides are multiples of 2² (the real one's of 64).
        decode(&server.url, &embeds, &dir.join("x.png"), &["--token", TOKEN, "--width", "66"]).output().unwrap(),
        &["422", "invalid_size", "width must be a positive multiple of 4, got 66"],
    );
    fails_clearly(
        decode(&server.url, &embeds, &dir.join("x.png"), &["--token", TOKEN, "--steps", "1000"]).output().unwrap(),
        &["422", "num_inference_steps"],
    );

    // Tokens.
    fails_clearly(
        decode(&server.url, &embeds, &dir.join("x.png"), &["--token", "wrong"]).output().unwrap(),
        &["the endpoint refused the token", "401"],
    );
    fails_clearly(
        decode(&server.url, &embeds, &dir.join("x.png"), &[]).output().unwrap(),
        &["the endpoint refused the token", "--token"],
    );
    assert!(!dir.join("x.png").exists(), "nothing is written on failure");
}

#[test]
fn endpoint_down_is_one_clear_line() {
    let dir = scratch("down");
    let embeds = prior_embeds(&dir);
    let url = format!("http://127.0.0.1:{}", free_port()); // nothing listens there
    fails_clearly(
        decode(&url, &embeds, &dir.join("x.png"), &[]).output().unwrap(),
        &[&format!("cannot reach the decoder endpoint at {url}"), "connection refused"],
    );
    // Local problems are reported before any connection.
    fails_clearly(
        decode(&url, &dir.join("missing.safetensors"), &dir.join("x.png"), &[]).output().unwrap(),
        &["missing.safetensors"],
    );
    fails_clearly(
        decode(&url, &embeds, &dir.join("x.bmp"), &[]).output().unwrap(),
        &["x.bmp", ".png, .webp, .jpg or .jpeg"],
    );
}

/// A one-shot HTTP server that answers every request with `reply`, for replies the real server never sends.
fn canned_server(reply: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 65536];
            // Read the request head and body (small: one embedding), then answer.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    url
}

#[test]
fn non_image_and_non_json_replies_are_clear_errors() {
    let dir = scratch("canned");
    let embeds = prior_embeds(&dir);
    let html = canned_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\nConnection: close\r\n\r\n<html>hi</html>",
    );
    fails_clearly(
        decode(&html, &embeds, &dir.join("x.png"), &[]).output().unwrap(),
        &["answered 200 with text/html", "not an image"],
    );
    let proxy = canned_server("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nupstream\nunavailable");
    fails_clearly(decode(&proxy, &embeds, &dir.join("x.png"), &[]).output().unwrap(), &["502", "upstream unavailable"]);
    let busy = canned_server("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 3\r\nContent-Length: 58\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"queue_full\",\"message\":\"1 running, 8 w\"}}");
    fails_clearly(
        decode(&busy, &embeds, &dir.join("x.png"), &[]).output().unwrap(),
        &["busy", "429 queue_full: 1 running, 8 w", "retry after 3 s"],
    );
}
