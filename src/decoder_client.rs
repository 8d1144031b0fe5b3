//! Client of a GPU decoder endpoint (protocol: `server/README.md`, `server/openapi.yaml`): sends a λ-ECLIPSE
//! image embedding to `POST {endpoint}/v1/decode` and receives the Kandinsky 2.2 image.
//!
//! Native only (blocking `ureq`); the browser will talk to the same endpoint with `fetch`. Every failure is an
//! [`Error::Input`] whose message is one line a user can act on: the endpoint cannot be reached, refused the
//! token, rejected the request (the server's own JSON message, with the status), or answered something that
//! is not an image.

use crate::error::{Error, Result};
use std::time::Duration;

/// Output image format, as the protocol's `format` field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Webp,
    Jpeg,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Jpeg => "jpeg",
        }
    }

    /// Whether `bytes` begin with this format's signature (PNG's 8-byte signature, JPEG's SOI marker, WebP's
    /// `RIFF….WEBP`): what a reply must hold before it is saved under a name that promises the format.
    pub fn is_signature_of(self, bytes: &[u8]) -> bool {
        match self {
            ImageFormat::Png => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            ImageFormat::Jpeg => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
            ImageFormat::Webp => bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ImageFormat::Png => "PNG",
            ImageFormat::Webp => "WebP",
            ImageFormat::Jpeg => "JPEG",
        }
    }

    /// The format a file name asks for by its extension (`.png`, `.webp`, `.jpg`/`.jpeg`), if any.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(ImageFormat::Png),
            "webp" => Some(ImageFormat::Webp),
            "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
            _ => None,
        }
    }
}

/// One decode. `None` fields are left out of the request so the server applies its documented defaults.
#[derive(Clone, Debug)]
pub struct DecodeRequest {
    pub image_embeds: Vec<f32>,
    /// The zero-image embedding written by `lambda-eclipse prior`; the server falls back to its configured one
    /// (or zeros) when absent, which is not what the reference pipeline does.
    pub negative_image_embeds: Option<Vec<f32>>,
    pub seed: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_inference_steps: Option<u32>,
    pub guidance_scale: Option<f32>,
    pub format: ImageFormat,
}

impl DecodeRequest {
    pub fn new(image_embeds: Vec<f32>) -> Self {
        DecodeRequest {
            image_embeds,
            negative_image_embeds: None,
            seed: None,
            width: None,
            height: None,
            num_inference_steps: None,
            guidance_scale: None,
            format: ImageFormat::Png,
        }
    }

    /// The JSON body. Embeddings travel as base64 of little-endian f32: exact, and a third of the size of
    /// decimal text.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("image_embeds".into(), base64_f32(&self.image_embeds).into());
        if let Some(neg) = &self.negative_image_embeds {
            body.insert("negative_image_embeds".into(), base64_f32(neg).into());
        }
        let opt = |body: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                body.insert(key.into(), v);
            }
        };
        opt(&mut body, "seed", self.seed.map(Into::into));
        opt(&mut body, "width", self.width.map(Into::into));
        opt(&mut body, "height", self.height.map(Into::into));
        opt(&mut body, "num_inference_steps", self.num_inference_steps.map(Into::into));
        opt(&mut body, "guidance_scale", self.guidance_scale.map(|g| f64::from(g).into()));
        body.insert("format".into(), self.format.as_str().into());
        serde_json::Value::Object(body)
    }
}

/// A decoded image as the endpoint sent it.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Encoded image file (PNG, WebP or JPEG).
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// `X-Seed`: the seed the server used (chosen by it when the request had none).
    pub seed: Option<u64>,
    /// `X-Decode-Ms`: time the server spent decoding, queue wait excluded.
    pub decode_ms: Option<f64>,
}

/// Blocking client of one endpoint.
pub struct DecoderClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Default time to open the TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for the reply: a queue wait plus a 50-step decode (seconds on a GPU, long on a CPU).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest reply accepted (a 2048² PNG of noise is ~12 MiB; ureq's default limit is 10 MB).
const MAX_REPLY_BYTES: u64 = 64 << 20;

impl DecoderClient {
    /// `endpoint` is the base URL (`https://host:port`, optionally with a path prefix); a trailing `/` or
    /// `/v1/decode` is accepted too.
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        Self::with_timeouts(endpoint, token, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    }

    pub fn with_timeouts(endpoint: &str, token: Option<String>, connect: Duration, read: Duration) -> Self {
        let trimmed = endpoint.trim().trim_end_matches('/');
        let base = trimmed.strip_suffix("/v1/decode").unwrap_or(trimmed).to_string();
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(read))
            .timeout_recv_body(Some(read))
            // 4xx/5xx carry the server's JSON error; read it instead of getting ureq's bare StatusCode.
            .http_status_as_error(false)
            .build()
            .new_agent();
        DecoderClient { base, token: token.filter(|t| !t.is_empty()), agent }
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// `GET /v1/info` (model, embedding dimension, limits, device, queue), as JSON.
    pub fn info(&self) -> Result<serde_json::Value> {
        let url = format!("{}/v1/info", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let reply = self.reply(req.call())?;
        serde_json::from_slice(&reply.body).map_err(|e| Error::Input(format!("{url}: the reply is not JSON ({e})")))
    }

    /// `POST /v1/decode`.
    pub fn decode(&self, request: &DecodeRequest) -> Result<Decoded> {
        let url = format!("{}/v1/decode", self.base);
        let body = request.to_json().to_string();
        let mut req = self.agent.post(&url).header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let reply = self.reply(req.send(body.as_bytes()))?;
        if !reply.content_type.starts_with("image/") || reply.body.is_empty() {
            return Err(Error::Input(format!(
                "the decoder endpoint at {url} answered {} with {} ({} bytes), not an image",
                reply.status,
                if reply.content_type.is_empty() { "no Content-Type" } else { &reply.content_type },
                reply.body.len()
            )));
        }
        // The Content-Type is only a claim (an `image/svg+xml` reply with a script in it is an "image" too): the
        // bytes must be the format asked for, or nothing is saved.
        if !request.format.is_signature_of(&reply.body) {
            return Err(Error::Input(format!(
                "the decoder endpoint at {url} answered {} ({} bytes) that is not a {} image: it begins with {}; nothing was saved",
                reply.content_type,
                reply.body.len(),
                request.format.label(),
                describe_start(&reply.body)
            )));
        }
        let seed = reply.header("x-seed").and_then(|s| s.parse().ok());
        let decode_ms = reply.header("x-decode-ms").and_then(|s| s.parse().ok());
        Ok(Decoded { bytes: reply.body, content_type: reply.content_type, seed, decode_ms })
    }

    /// Turns a transport result into a successful reply or a one-line error.
    fn reply(&self, result: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply> {
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = header_str(&headers, "content-type").unwrap_or_default();
        let body =
            resp.body_mut().with_config().limit(MAX_REPLY_BYTES).read_to_vec().map_err(|e| self.transport_error(e))?;
        let reply = Reply { status, headers, content_type, body };
        if (200..300).contains(&status) {
            Ok(reply)
        } else {
            Err(reply.status_error(&self.base, self.token.is_some()))
        }
    }

    fn transport_error(&self, e: ureq::Error) -> Error {
        let detail = match &e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the server running?)".to_string()
            }
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Timeout(which) => format!("timed out ({which})"),
            ureq::Error::BodyExceedsLimit(n) => format!("the reply is larger than {n} bytes"),
            other => other.to_string(),
        };
        Error::Input(format!("cannot reach the decoder endpoint at {}: {}", self.base, one_line(&detail)))
    }
}

struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        header_str(&self.headers, name)
    }

    /// The error a non-2xx reply means: the server's `{"error": {"code", "message"}}` when it sent one.
    fn status_error(&self, base: &str, sent_token: bool) -> Error {
        let (code, message) = match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) if v["error"]["message"].is_string() => (
                v["error"]["code"].as_str().unwrap_or("error").to_string(),
                v["error"]["message"].as_str().unwrap_or_default().to_string(),
            ),
            _ => ("error".to_string(), truncate(&String::from_utf8_lossy(&self.body), 200)),
        };
        let message = one_line(&message);
        let text = match self.status {
            401 if sent_token => format!("the endpoint refused the token (401 {code}: {message})"),
            401 => format!("the endpoint refused the token: it requires one, pass --token (401 {code}: {message})"),
            429 | 503 => {
                let retry = self.header("retry-after").map(|s| format!("; retry after {s} s")).unwrap_or_default();
                format!("the decoder endpoint at {base} is busy ({} {code}: {message}){retry}", self.status)
            }
            s => format!("the decoder endpoint at {base} answered {s} {code}: {message}"),
        };
        Error::Input(text)
    }
}

fn header_str(headers: &ureq::http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

/// The first bytes of a reply in words: as text when they are printable (`<svg …`, `<!DOCTYPE html>`), else in hex.
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    // The valid UTF-8 prefix: 24 bytes may end inside a character.
    let text =
        std::str::from_utf8(head).unwrap_or_else(|e| std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default());
    if !text.is_empty() && text.chars().all(|c| !c.is_control() || c.is_whitespace()) {
        format!("\"{}\"", one_line(text))
    } else {
        format!("the bytes {:02X?}", &head[..head.len().min(8)])
    }
}

/// Keeps error messages to one line (the CLI prints exactly one).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Standard base64 (RFC 4648, padded) of the little-endian f32 bytes.
pub fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() { ALPHABET[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        // Whole f32s only, so every padding case (4, 8, 12 bytes → 2, 1, 0 `=`) is covered by these three.
        let enc = |b: &[u8]| {
            let vals: Vec<f32> = b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            base64_f32(&vals)
        };
        assert_eq!(enc(b"abcd"), "YWJjZA==");
        assert_eq!(enc(b"abcdefgh"), "YWJjZGVmZ2g=");
        assert_eq!(enc(b"abcdefghijkl"), "YWJjZGVmZ2hpamts");
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    }

    #[test]
    fn signatures_tell_the_three_formats_apart() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        let webp = b"RIFF\x10\0\0\0WEBPVP8 ";
        for (format, good) in
            [(ImageFormat::Png, &png[..]), (ImageFormat::Jpeg, &jpeg[..]), (ImageFormat::Webp, &webp[..])]
        {
            assert!(format.is_signature_of(good), "{format:?}");
            let all: [&[u8]; 6] =
                [&png[..], &jpeg[..], &webp[..], b"<svg xmlns=\"http://www.w3.org/2000/svg\">", b"", b"RIFF"];
            for other in all {
                assert_eq!(format.is_signature_of(other), std::ptr::eq(other, good), "{format:?} vs {other:?}");
            }
        }
        assert_eq!(describe_start(b"<svg onload=\"alert(1)\">\n</svg>"), "\"<svg onload=\"alert(1)\">\"");
        assert_eq!(describe_start(&[0, 1, 2]), "the bytes [00, 01, 02]");
    }

    #[test]
    fn endpoint_forms_are_normalised() {
        for e in ["http://h:1", "http://h:1/", "http://h:1/v1/decode", " http://h:1/v1/decode/ "] {
            assert_eq!(DecoderClient::new(e, None).endpoint(), "http://h:1");
        }
    }

    #[test]
    fn request_json_leaves_defaults_to_the_server() {
        let mut r = DecodeRequest::new(vec![1.0]);
        r.seed = Some(7);
        let v = r.to_json();
        assert_eq!(v["image_embeds"], "AACAPw==");
        assert_eq!(v["seed"], 7);
        assert_eq!(v["format"], "png");
        assert!(v.get("width").is_none() && v.get("negative_image_embeds").is_none());
    }
}
