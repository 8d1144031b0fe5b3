//! Hostile and careless inputs (issue 12), one test per defect class: corrupt safetensors ranges and
//! non-finite weights (6), outputs replaced whole or not at all (8), bounded interpolation steps (9), scheduler
//! and model configs that would compute NaN, NaN Canny thresholds and non-finite results (10), and decoder
//! replies that are not the image format asked for (11). Each input fails with one clear line and exit 1.

mod common;
use common::*;
use lambda_eclipse::tensor_file::{to_bytes, OutTensor};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    common::scratch("hostile_inputs", name)
}

fn kandinsky_case(name: &str) -> PathBuf {
    shared().join("goldens/kandinsky-tiny").join(format!("{name}.safetensors"))
}

/// A writable copy of a model folder.
fn copy_of(src: &Path, name: &str) -> PathBuf {
    let dst = scratch(name).join("model");
    copy_dir(src, &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &to)
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

/// A safetensors file taken apart: its header JSON (padding included) and the bytes after it.
struct St {
    header: Vec<u8>,
    data: Vec<u8>,
}

impl St {
    fn read(path: &Path) -> St {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        St { header: bytes[8..8 + n].to_vec(), data: bytes[8 + n..].to_vec() }
    }
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(&self.header).unwrap()
    }
    /// Replaces the header with `json`, padded with spaces to a multiple of 8 as safetensors writers do.
    fn set_json(&mut self, json: &serde_json::Map<String, serde_json::Value>) {
        let mut h = serde_json::to_vec(json).unwrap();
        h.resize(h.len().div_ceil(8) * 8 + 8, b' ');
        self.header = h;
    }
    /// `(begin, end)` of a tensor within the data section.
    fn range(&self, tensor: &str) -> (usize, usize) {
        let o = &self.json()[tensor]["data_offsets"];
        (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize)
    }
    /// Writes the file with the length prefix `header.len()` plus `prefix_delta`.
    fn write(&self, path: &Path, prefix_delta: i64) {
        let mut out = ((self.header.len() as i64 + prefix_delta) as u64).to_le_bytes().to_vec();
        out.extend(&self.header);
        out.extend(&self.data);
        std::fs::write(path, out).unwrap();
    }
    /// Overwrites a tensor's f32 values with `value`.
    fn fill_f32(&mut self, tensor: &str, value: f32) {
        let (b, e) = self.range(tensor);
        for c in self.data[b..e].chunks_exact_mut(4) {
            c.copy_from_slice(&value.to_le_bytes());
        }
    }
}

fn embed_text(model: &Path) -> Output {
    bin()
        .args(["embed-text", "--backend", "cpu", "--model"])
        .arg(model)
        .args(["--prompt", "a cat", "--out"])
        .arg(model.join("out.safetensors"))
        .output()
        .unwrap()
}

fn prior(model: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["prior", "--backend", "cpu", "--model"])
        .arg(model)
        .args(["--prompt", "a cat", "--seed", "1"])
        .args(extra)
        .arg("--out")
        .arg(model.join("out.safetensors"))
        .output()
        .unwrap()
}

fn decode_local(model: &Path, out: &Path) -> Output {
    bin()
        .args(["decode-local", "--backend", "cpu", "--model"])
        .arg(model)
        .arg("--embeds")
        .arg(kandinsky_case("ddpm_cfg"))
        .args(["--seed", "1", "--steps", "2", "--scheduler", "ddim", "--width", "32", "--height", "32", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// Like `fails_clearly` for commands that report progress on stderr first (`decode-local`): exit ≠ 0, no
/// panic, and the last line is the error, holding every needle.
#[track_caller]
fn fails_after_progress(out: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "expected a clean failure: {err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "the last line should be the error: {err}");
    for n in needles {
        assert!(last.contains(n), "the error should mention {n:?}: {err}");
    }
}

/// Runs `cmd`, killing it after `limit` (a regression must fail, not hang the suite).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

// ---- 6: safetensors ranges must tile the data section; weights must be finite ----

const TEXT_WEIGHTS: &str = "text_encoder/model.safetensors";

#[test]
fn a_header_length_one_byte_short_is_refused_not_read_shifted() {
    // The header keeps parsing (it ends in padding spaces), but every tensor would be read one byte early.
    let model = copy_of(&tiny_model(), "length_short");
    let st = St::read(&model.join(TEXT_WEIGHTS));
    assert_eq!(st.header.last(), Some(&b' '), "the fixture's header is padded");
    st.write(&model.join(TEXT_WEIGHTS), -1);
    fails_clearly(embed_text(&model), &[TEXT_WEIGHTS, "corrupt safetensors", "text_projection.weight", "data bytes"]);
}

#[test]
fn overlapping_or_shifted_data_offsets_are_refused_naming_the_tensor() {
    let model = copy_of(&tiny_model(), "overlap");
    let path = model.join(TEXT_WEIGHTS);
    let mut st = St::read(&path);
    // The last tensor moved 4 bytes back: same length (shape × dtype still right), inside the file, but it
    // overlaps the tensor before it and leaves 4 bytes unused at the end.
    let mut json = st.json();
    let (b, e) = st.range("text_projection.weight");
    json["text_projection.weight"]["data_offsets"] = serde_json::json!([b - 4, e - 4]);
    st.set_json(&json);
    st.write(&path, 0);
    fails_clearly(
        embed_text(&model),
        &[TEXT_WEIGHTS, "tensor `text_projection.weight`", "overlap tensor `text_model.final_layer_norm.weight`"],
    );

    // Two tensors of the same size given the same range: the second reads the first's values.
    let mut st = St::read(&tiny_model().join(TEXT_WEIGHTS));
    let mut json = st.json();
    json["text_model.final_layer_norm.bias"]["data_offsets"] =
        json["text_model.final_layer_norm.weight"]["data_offsets"].clone();
    st.set_json(&json);
    st.write(&path, 0);
    fails_clearly(embed_text(&model), &[TEXT_WEIGHTS, "text_model.final_layer_norm", "data offsets"]);
}

#[test]
fn shape_times_dtype_is_checked_for_tensors_the_engine_skips_too() {
    // An int64 buffer (as CLIP's `position_ids`) whose shape does not match its bytes: the safetensors crate
    // refuses the file, so must we, although the engine never reads it.
    let model = copy_of(&tiny_model(), "skipped_dtype");
    let path = model.join(TEXT_WEIGHTS);
    let mut st = St::read(&path);
    let mut json = st.json();
    let end = st.data.len() as u64;
    json.insert(
        "text_model.embeddings.position_ids".into(),
        serde_json::json!({"dtype": "I64", "shape": [1, 76], "data_offsets": [end, end + 77 * 8]}),
    );
    st.data.extend((0..77i64).flat_map(|i| i.to_le_bytes()));
    st.set_json(&json);
    st.write(&path, 0);
    fails_clearly(
        embed_text(&model),
        &[TEXT_WEIGHTS, "tensor `text_model.embeddings.position_ids`", "shape [1, 76] in I64 needs 608 bytes"],
    );
    // With the right shape the same file loads.
    json["text_model.embeddings.position_ids"]["shape"] = serde_json::json!([1, 77]);
    st.set_json(&json);
    st.write(&path, 0);
    ok(embed_text(&model));
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_the_tensor() {
    let model = copy_of(&tiny_model(), "nan_weights");
    let path = model.join(TEXT_WEIGHTS);
    let mut st = St::read(&path);
    let (b, _) = st.range("text_model.encoder.layers.0.mlp.fc1.weight");
    st.data[b + 8..b + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    st.write(&path, 0);
    fails_clearly(
        embed_text(&model),
        &[
            TEXT_WEIGHTS,
            "tensor `text_model.encoder.layers.0.mlp.fc1.weight`",
            "1 of its 2048 values are NaN or infinite (the first at index 2)",
        ],
    );
    st.fill_f32("text_model.encoder.layers.0.mlp.fc1.weight", f32::INFINITY);
    st.write(&path, 0);
    fails_clearly(embed_text(&model), &["fc1.weight", "2048 of its 2048 values"]);
}

/// The GPU backend is handed the same host bytes, checked before the upload.
#[cfg(feature = "gpu")]
#[test]
fn non_finite_weights_are_refused_before_a_gpu_upload() {
    let Some(gpu) = open_gpu_or_skip() else { return };
    let mut files = lambda_eclipse::weights::MemFiles::new();
    let mut st = St::read(&tiny_model().join(TEXT_WEIGHTS));
    st.fill_f32("text_projection.weight", f32::NAN);
    let mut bytes = Vec::new();
    bytes.extend((st.header.len() as u64).to_le_bytes());
    bytes.extend(&st.header);
    bytes.extend(&st.data);
    files.insert(TEXT_WEIGHTS, bytes);
    let err = pollster::block_on(lambda_eclipse::weights::load_component_weights(
        &gpu,
        &files,
        "text_encoder",
        "model",
        |_, _| {},
    ))
    .err()
    .expect("NaN weights must not load")
    .to_string();
    assert!(
        err.contains(TEXT_WEIGHTS) && err.contains("tensor `text_projection.weight`") && err.contains("NaN"),
        "{err}"
    );
}

// ---- 8: every output replaced whole or not at all ----

/// The command under a 1 KiB file-size limit with SIGXFSZ ignored: writes past 1 KiB fail with EFBIG, as a
/// full disk fails them.
fn with_small_file_limit(cmd: &Command) -> Command {
    let mut limited = Command::new("bash");
    limited.args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\""]).arg(cmd.get_program()).args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        limited.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    limited
}

/// A one-connection-at-a-time HTTP server answering every request with `reply`.
fn canned_server(reply: Vec<u8>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(&reply);
        }
    });
    url
}

fn http_reply(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend(body);
    r
}

/// A 64×64 PNG of noise (about 12 KB, more than the 1 KiB limit).
fn noise_png() -> Vec<u8> {
    let mut x = 0x2545_F491u32;
    let img = image::RgbImage::from_fn(64, 64, |_, _| {
        let mut px = [0u8; 3];
        for v in &mut px {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
        image::Rgb(px)
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn a_failed_write_keeps_the_previous_output_and_leaves_no_temporary_file() {
    let inputs = scratch("write_inputs");
    let corners: Vec<PathBuf> = (0..4).map(|i| inputs.join(format!("c{i}.safetensors"))).collect();
    for (i, c) in corners.iter().enumerate() {
        let mut t = BTreeMap::new();
        t.insert("image_embeds".to_string(), OutTensor::F32(vec![1, 32], vec![i as f32; 32]));
        std::fs::write(c, to_bytes(&t).unwrap()).unwrap();
    }
    let png = noise_png();
    assert!(png.len() > 4096);
    let endpoint = canned_server(http_reply("image/png", &png), 2);

    // (name, output file, command writing it)
    type MakeCommand<'a> = Box<dyn Fn(&Path) -> Command + 'a>;
    let commands: Vec<(&str, &str, MakeCommand<'_>)> = vec![
        (
            "embed-text",
            "t.safetensors",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.args(["embed-text", "--backend", "cpu", "--model"])
                    .arg(tiny_model())
                    .args(["--prompt", "a cat", "--out"])
                    .arg(out);
                c
            }),
        ),
        (
            "embed-image",
            "i.safetensors",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.args(["embed-image", "--backend", "cpu", "--model"])
                    .arg(tiny_model())
                    .arg("--out")
                    .arg(out)
                    .arg(asset("chelsea.png"));
                c
            }),
        ),
        (
            "prior",
            "p.safetensors",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.args(["prior", "--backend", "cpu", "--model"])
                    .arg(tiny_model())
                    .args(["--prompt", "a cat", "--seed", "1", "--out"])
                    .arg(out);
                c
            }),
        ),
        (
            "canny",
            "edges.png",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.arg("canny").arg(asset("astronaut.png")).arg("--out").arg(out);
                c
            }),
        ),
        (
            "interpolate (safetensors)",
            "grid.safetensors",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.arg("interpolate");
                for (flag, corner) in
                    ["--top-left", "--top-right", "--bottom-left", "--bottom-right"].iter().zip(&corners)
                {
                    c.arg(flag).arg(corner);
                }
                c.args(["--steps", "2", "--out"]).arg(out);
                c
            }),
        ),
        (
            "interpolate (json, relative --out)",
            "grid.json",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.arg("interpolate");
                for (flag, corner) in
                    ["--top-left", "--top-right", "--bottom-left", "--bottom-right"].iter().zip(&corners)
                {
                    c.arg(flag).arg(corner);
                }
                c.args(["--steps", "2", "--out", "grid.json"]).current_dir(out.parent().unwrap());
                c
            }),
        ),
        (
            "decode-local",
            "d.safetensors",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.args(["decode-local", "--backend", "cpu", "--model"])
                    .arg(shared().join("goldens/kandinsky-tiny/model"))
                    .arg("--embeds")
                    .arg(kandinsky_case("ddpm_cfg"))
                    .args([
                        "--seed",
                        "1",
                        "--steps",
                        "2",
                        "--scheduler",
                        "ddim",
                        "--width",
                        "32",
                        "--height",
                        "32",
                        "--out",
                    ])
                    .arg(out);
                c
            }),
        ),
        (
            "decode",
            "remote.png",
            Box::new(|out: &Path| {
                let mut c = bin();
                c.args(["decode", "--endpoint", &endpoint, "--embeds"])
                    .arg(&corners[0])
                    .arg("--out")
                    .arg(out)
                    .env_remove("LAMBDA_DECODER_TOKEN");
                c
            }),
        ),
    ];
    let previous = b"the previous output, which a failed write must not destroy\n";
    for (name, file, command) in &commands {
        let dir = scratch(&format!("write_{}", file.replace('.', "_")));
        let out = dir.join(file);
        std::fs::write(&out, previous).unwrap();
        let r = with_small_file_limit(&command(&out)).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && !err.contains("panicked"), "{name}: {err}");
        let now = std::fs::read(&out).unwrap();
        assert!(now == previous, "{name}: a failed write changed the previous {file} ({} bytes now): {err}", now.len());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(file)], "{name}: a temporary file was left behind");
        // decode-local reports progress on stderr first: the error is the last line.
        let last = err.trim_end().lines().last().unwrap_or_default();
        for needle in
            [&format!("{file}: cannot write the output"), "File too large", "an existing file there is unchanged"]
        {
            assert!(
                last.starts_with("error: ") && last.contains(needle),
                "{name}: the error should say {needle:?}: {err}"
            );
        }

        // Without the limit the same command replaces the file whole.
        ok(command(&out).output().unwrap());
        let written = std::fs::read(&out).unwrap();
        assert!(written.len() > 1024 && written != previous, "{name}: the output was not replaced");
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(left, 1, "{name}: a temporary file was left behind after success");
    }
}

// ---- 9: interpolation steps bounded like the JS API ----

#[test]
fn interpolate_steps_have_the_js_apis_bound() {
    let dir = scratch("interpolate_steps");
    let corners: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("c{i}.safetensors"))).collect();
    for (i, c) in corners.iter().enumerate() {
        let mut t = BTreeMap::new();
        t.insert("image_embeds".to_string(), OutTensor::F32(vec![1, 8], vec![i as f32; 8]));
        std::fs::write(c, to_bytes(&t).unwrap()).unwrap();
    }
    let run = |steps: &str| {
        let mut c = bin();
        c.arg("interpolate");
        for (flag, corner) in ["--top-left", "--top-right", "--bottom-left", "--bottom-right"].iter().zip(&corners) {
            c.arg(flag).arg(corner);
        }
        c.args(["--steps", steps, "--out"]).arg(dir.join("grid.safetensors"));
        output_within(&mut c, Duration::from_secs(30))
    };
    ok(run("64"));
    let (shape, _) =
        lambda_eclipse::tensor_file::read_f32(&std::fs::read(dir.join("grid.safetensors")).unwrap(), "grid", "grid")
            .unwrap();
    assert_eq!(shape, vec![65 * 65, 8]);
    for steps in ["65", "100000", "18446744073709551615"] {
        fails_clearly(run(steps), &["interpolation steps must be an integer from 1 to 64", steps]);
    }
}

// ---- 10: configs that compute NaN, NaN thresholds, non-finite results ----

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn absurd_scheduler_configs_are_refused_by_field_before_any_weight() {
    let decoder = shared().join("goldens/kandinsky-tiny/model");
    let model = copy_of(&decoder, "scheduler_configs");
    let config = model.join("scheduler/scheduler_config.json");
    let original = std::fs::read_to_string(&config).unwrap();
    let out = model.join("out.png");
    for (field, value, needle) in [
        ("num_train_timesteps", "1000000000000", "`num_train_timesteps` 1000000000000 (must be from 2 to 100000)"),
        ("beta_start", "1.5", "`beta_start` 1.5 (must be between 0 and 1, exclusive)"),
        ("beta_end", "-1", "`beta_end` -1 (must be between 0 and 1, exclusive)"),
        ("beta_start", "0.5", "`beta_start` 0.5 is above `beta_end` 0.012"),
        ("beta_end", "0.9", "`beta_end` with 1000 training steps makes ᾱ underflow to 0"),
        ("beta_start", "NaN", "`beta_start` NaN"),
        ("beta_end", "Infinity", "`beta_end` inf"),
        ("trained_betas", "[0.5, 1.0]", "`trained_betas` has 2 values for 1000"),
        ("steps_offset", "-3", "`steps_offset` -3"),
        ("steps_offset", "9223372036854775807", "`steps_offset` 9223372036854775807"),
    ] {
        // Python's json writes NaN and Infinity bare, so the file is edited as text.
        let text = original
            .replace(&format!("\"{field}\": {}", field_value(&original, field)), &format!("\"{field}\": {value}"));
        assert_ne!(text, original, "{field} not found");
        std::fs::write(&config, text).unwrap();
        fails_clearly(
            decode_local(&model, &out),
            &["scheduler/scheduler_config.json", "invalid scheduler config", needle],
        );
        assert!(!out.exists());
    }
    let trained: Vec<f64> = (0..1000).map(|i| if i == 7 { 1.0 } else { 0.01 }).collect();
    std::fs::write(&config, original.replace("\"trained_betas\": null", &format!("\"trained_betas\": {trained:?}")))
        .unwrap();
    fails_clearly(decode_local(&model, &out), &["`trained_betas` value 7 is 1"]);
    // The untouched config still decodes.
    std::fs::write(&config, &original).unwrap();
    ok(decode_local(&model, &out));
}

/// The literal after `"field": ` in a pretty-printed JSON text.
fn field_value(text: &str, field: &str) -> String {
    let start = text.find(&format!("\"{field}\": ")).unwrap() + field.len() + 4;
    text[start..].split([',', '\n']).next().unwrap().to_string()
}

#[test]
fn model_configs_that_compute_nan_are_refused_at_load() {
    let model = copy_of(&tiny_model(), "eps");
    for (value, shown) in [(-1.0, "-1"), (0.0, "0")] {
        edit_json(&model.join("text_encoder/config.json"), |c| {
            c.insert("layer_norm_eps".into(), value.into());
        });
        fails_clearly(
            embed_text(&model),
            &["text_encoder/config.json", &format!("`layer_norm_eps` is {shown}; it must be a positive number")],
        );
    }
    let model = copy_of(&tiny_model(), "eps_prior");
    edit_json(&model.join("prior/config.json"), |c| {
        c.insert("layer_norm_eps".into(), (-1.0).into());
    });
    fails_clearly(prior(&model, &[]), &["prior/config.json", "`layer_norm_eps` is -1"]);
    let model = copy_of(&tiny_model(), "eps_vision");
    edit_json(&model.join("image_encoder/config.json"), |c| {
        c.insert("layer_norm_eps".into(), (-1e-5).into());
    });
    fails_clearly(prior(&model, &[]), &["image_encoder/config.json", "`layer_norm_eps` is -0.00001"]);
    let decoder = copy_of(&shared().join("goldens/kandinsky-tiny/model"), "eps_unet");
    edit_json(&decoder.join("unet/config.json"), |c| {
        c.insert("norm_eps".into(), (-1.0).into());
    });
    fails_clearly(decode_local(&decoder, &decoder.join("o.png")), &["unet/config.json", "`norm_eps` is -1"]);
}

#[test]
fn nan_canny_thresholds_are_refused() {
    let dir = scratch("canny_nan");
    for (low, high) in [("NaN", "200"), ("100", "NaN"), ("-inf", "200")] {
        let out = dir.join("e.png");
        let r = bin()
            .arg("canny")
            .arg(asset("astronaut.png"))
            .arg(format!("--low={low}"))
            .arg(format!("--high={high}"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        fails_clearly(r, &["the Canny thresholds must be finite numbers"]);
        assert!(!out.exists());
    }
    let control = asset("astronaut.png");
    let r = prior(&tiny_model(), &["--control", control.to_str().unwrap(), "--canny-low", "NaN"]);
    fails_clearly(r, &["control image", "the Canny thresholds must be finite numbers, got low NaN"]);
}

#[test]
fn a_non_finite_result_is_an_error_naming_the_stage() {
    // Finite weights so large that a stage overflows: no load-time check can see it, the result must.
    let model = copy_of(&tiny_model(), "overflow_text");
    let mut st = St::read(&model.join(TEXT_WEIGHTS));
    // A layer norm's γ: every normalised value above 1.13 in size becomes ±∞ (whatever the other weights).
    st.fill_f32("text_model.final_layer_norm.weight", 3e38);
    st.write(&model.join(TEXT_WEIGHTS), 0);
    fails_clearly(embed_text(&model), &["text encoder: ", "values computed are NaN or infinite"]);

    let model = copy_of(&tiny_model(), "overflow_prior");
    let path = model.join("prior/diffusion_pytorch_model.safetensors");
    let mut st = St::read(&path);
    st.fill_f32("norm_out.weight", 3e38);
    st.write(&path, 0);
    fails_clearly(prior(&model, &[]), &["prior: ", "32 of the 32 values computed are NaN or infinite"]);
    assert!(!model.join("out.safetensors").exists());

    let decoder = copy_of(&shared().join("goldens/kandinsky-tiny/model"), "overflow_unet");
    let path = decoder.join("unet/diffusion_pytorch_model.safetensors");
    let mut st = St::read(&path);
    st.fill_f32("conv_norm_out.weight", 3e38);
    st.write(&path, 0);
    fails_after_progress(
        decode_local(&decoder, &decoder.join("o.png")),
        &["decoder step 1/2", "the latents", "NaN or infinite"],
    );

    let decoder = copy_of(&shared().join("goldens/kandinsky-tiny/model"), "overflow_movq");
    let path = decoder.join("movq/diffusion_pytorch_model.safetensors");
    let mut st = St::read(&path);
    st.fill_f32("decoder.conv_norm_out.norm_layer.weight", 3e38);
    st.fill_f32("decoder.conv_norm_out.conv_y.bias", 3e38);
    st.write(&path, 0);
    fails_after_progress(decode_local(&decoder, &decoder.join("o.png")), &["MoVQ decode", "NaN or infinite"]);
    assert!(!decoder.join("o.png").exists());
}

// ---- 11: a decoder reply must be the image format asked for ----

#[test]
fn decode_refuses_a_reply_that_is_not_the_requested_format() {
    let dir = scratch("decode_magic");
    let embeds = dir.join("e.safetensors");
    let mut t = BTreeMap::new();
    t.insert("image_embeds".to_string(), OutTensor::F32(vec![1, 32], vec![0.5; 32]));
    std::fs::write(&embeds, to_bytes(&t).unwrap()).unwrap();
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"></svg>"#;
    let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
    let png = noise_png();
    for (content_type, body, out, needles) in [
        ("image/png", &svg[..], "out.png", ["not a PNG image", "\"<svg xmlns="]),
        ("image/svg+xml", &svg[..], "out.png", ["image/svg+xml", "not a PNG image"]),
        ("image/webp", &html[..], "out.webp", ["not a WebP image", "<!DOCTYPE html>"]),
        ("image/jpeg", &png[..], "out.jpg", ["not a JPEG image", "[89, 50, 4E, 47"]),
    ] {
        let url = canned_server(http_reply(content_type, body), 1);
        let out = dir.join(out);
        let r = bin()
            .args(["decode", "--endpoint", &url, "--embeds"])
            .arg(&embeds)
            .arg("--out")
            .arg(&out)
            .env_remove("LAMBDA_DECODER_TOKEN")
            .output()
            .unwrap();
        let mut all = vec!["nothing was saved"];
        all.extend(needles);
        fails_clearly(r, &all);
        assert!(!out.exists(), "{content_type} reply saved as {}", out.display());
    }
    // The format asked for is saved.
    let url = canned_server(http_reply("image/png", &png), 1);
    ok(bin()
        .args(["decode", "--endpoint", &url, "--embeds"])
        .arg(&embeds)
        .arg("--out")
        .arg(dir.join("ok.png"))
        .env_remove("LAMBDA_DECODER_TOKEN")
        .output()
        .unwrap());
    assert_eq!(std::fs::read(dir.join("ok.png")).unwrap(), png);
}
