//! The `lambda-eclipse` command line: its outputs (names, shapes, values) and its errors (exit code ≠ 0,
//! one line naming the file and what is wrong, never a panic).

mod common;
use common::*;
use lambda_eclipse::tensor_file;
use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli", name)
}

/// A writable copy of the tiny model.
fn model_copy(name: &str) -> PathBuf {
    let dir = scratch(name).join("model");
    for entry in walk(&tiny_model()) {
        let rel = entry.strip_prefix(tiny_model()).unwrap();
        let dst = dir.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
    }
    dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

fn read(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    tensor_file::read_f32(&std::fs::read(path).unwrap(), name, "output").unwrap()
}

#[test]
fn embed_text_writes_ids_mask_hidden_states_and_text_embeds() {
    let out = scratch("embed_text").join("t.safetensors");
    let case = &cases()[0];
    ok(bin()
        .args(["embed-text", "--model"])
        .arg(tiny_model())
        .args(["--prompt", &case.prompt, "--out"])
        .arg(&out)
        .output()
        .unwrap());
    let g = Golden::open(case);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(tensor_file::read_i64(&bytes, "input_ids", "t").unwrap(), (vec![1, 77], g.i64("input_ids")));
    assert_eq!(tensor_file::read_i64(&bytes, "attention_mask", "t").unwrap(), (vec![1, 77], g.i64("attention_mask")));
    let (shape, h) = read(&out, "last_hidden_state");
    assert_eq!(shape, vec![1, 77, 32]);
    assert_close("last_hidden_state", &h, &g.f32("last_hidden_state").1, 1e-4);
    let (shape, e) = read(&out, "text_embeds");
    assert_eq!(shape, vec![1, 32]);
    assert_close("text_embeds", &e, &g.f32("text_embeds").1, 1e-4);
}

#[test]
fn embed_image_writes_pixel_values_and_image_embeds_for_each_image() {
    let out = scratch("embed_image").join("i.safetensors");
    ok(bin()
        .args(["embed-image", "--model"])
        .arg(tiny_model())
        .arg("--out")
        .arg(&out)
        .arg(asset("chelsea.png"))
        .arg(asset("coffee.png"))
        .output()
        .unwrap());
    let g = Golden::open(&cases()[0]);
    let (shape, pv) = read(&out, "pixel_values");
    assert_eq!(shape, vec![2, 3, 224, 224]);
    assert_close("pixel_values[0]", &pv[..3 * 224 * 224], &g.f32("subject0_pixel_values").1, 1e-6);
    let (shape, e) = read(&out, "image_embeds");
    assert_eq!(shape, vec![2, 32]);
    assert_close("image_embeds[0]", &e[..32], &g.f32("subject0_image_embeds").1, 1e-4);
    assert_close("image_embeds[1]", &e[32..], &g.f32("subject1_image_embeds").1, 1e-4);
}

#[test]
fn prior_with_golden_noise_reproduces_the_golden_and_warns_on_stderr() {
    let dir = scratch("prior");
    for case in cases().iter().filter(|c| c.name == "cat_glasses" || c.name == "repeat_missing") {
        let out = dir.join(format!("{}.safetensors", case.name));
        let mut cmd = bin();
        cmd.args(["prior", "--model"]).arg(tiny_model()).args(["--prompt", &case.prompt]);
        for s in &case.subjects {
            cmd.arg("--subject").arg(format!("{}={}", s.keyword, asset(&s.image).display()));
        }
        cmd.arg("--noise").arg(lambda_tiny().join(&case.tensors)).arg("--out").arg(&out);
        let result = ok(cmd.output().unwrap());
        let g = Golden::open(case);
        for name in ["image_embeds", "negative_image_embeds", "encoder_hidden_states", "noise"] {
            let (shape, v) = read(&out, name);
            let (gshape, gv) = g.f32(name);
            assert_eq!(shape, gshape, "{name} shape");
            assert_close(&format!("{}: {name}", case.name), &v, &gv, 1e-4);
        }
        let stderr = String::from_utf8_lossy(&result.stderr);
        if case.name == "repeat_missing" {
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("warning: ") && l.contains("unicorn")).count(),
                1,
                "{stderr}"
            );
        } else {
            assert!(stderr.is_empty(), "{stderr}");
        }
    }
}

#[test]
fn prior_accepts_keywords_with_spaces_and_a_seed() {
    let out = scratch("prior_spaces").join("p.safetensors");
    let r = ok(bin()
        .args(["prior", "--model"])
        .arg(tiny_model())
        .args(["--prompt", "a portrait of franz kafka", "--seed", "5", "--subject"])
        .arg(format!("franz kafka={}", asset("franz-kafka.jpg").display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    assert!(r.stderr.is_empty(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(read(&out, "image_embeds").0, vec![1, 32]);
}

#[test]
fn canny_writes_the_edge_map() {
    let out = scratch("canny").join("edges.png");
    ok(bin().arg("canny").arg(asset("astronaut.png")).arg("--out").arg(&out).output().unwrap());
    let case = cases().into_iter().find(|c| c.canny.is_some()).unwrap();
    let (_, want) = Golden::open(&case).f32("canny_edges");
    let got = image::open(&out).unwrap().to_luma8().into_raw();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(&a, &b)| a as f32 == b), "edge map differs from the golden");
}

#[test]
fn interpolate_writes_a_grid_as_safetensors_and_json() {
    let dir = scratch("interpolate");
    let corners: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("c{i}.safetensors"))).collect();
    for (i, c) in corners.iter().enumerate() {
        ok(bin()
            .args(["prior", "--model"])
            .arg(tiny_model())
            .args(["--prompt", "a cat", "--seed", &i.to_string(), "--out"])
            .arg(c)
            .output()
            .unwrap());
    }
    let args = |out: &Path| {
        let mut cmd = bin();
        cmd.arg("interpolate");
        for (flag, c) in ["--top-left", "--top-right", "--bottom-left", "--bottom-right"].iter().zip(&corners) {
            cmd.arg(flag).arg(c);
        }
        cmd.args(["--steps", "2", "--out"]).arg(out);
        cmd
    };
    ok(args(&dir.join("grid.safetensors")).output().unwrap());
    let (shape, grid) = read(&dir.join("grid.safetensors"), "grid");
    assert_eq!(shape, vec![9, 32]);
    assert_close("grid corner", &grid[..32], &read(&corners[0], "image_embeds").1, 0.0);
    assert_close("grid corner", &grid[8 * 32..], &read(&corners[3], "image_embeds").1, 0.0);
    ok(args(&dir.join("grid.json")).output().unwrap());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grid.json")).unwrap()).unwrap();
    assert_eq!(json["embeddings"].as_array().unwrap().len(), 9);
}

fn embed_text_on(model: &Path) -> Output {
    bin()
        .args(["embed-text", "--model"])
        .arg(model)
        .args(["--prompt", "a cat", "--out"])
        .arg(model.join("out.safetensors"))
        .output()
        .unwrap()
}

fn rewrite_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

/// Appends tensor `name`, a copy of `source`'s bytes, after the file's other tensors (keeping the file valid).
fn append_copy_of_tensor(path: &Path, source: &str, name: &str) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    let mut entry = header[source].clone();
    let range = |i: usize| entry["data_offsets"][i].as_u64().unwrap() as usize;
    let (b, e) = (range(0), range(1));
    entry["data_offsets"] = serde_json::json!([data.len(), data.len() + e - b]);
    data.extend_from_within(b..e);
    header[name] = entry;
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let model = model_copy("truncated");
    let w = model.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    fails_clearly(embed_text_on(&model), &["text_encoder/model.safetensors", "truncated"]);
    std::fs::write(&w, &bytes[..4]).unwrap();
    fails_clearly(embed_text_on(&model), &["text_encoder/model.safetensors", "not a safetensors file"]);
}

#[test]
fn header_lying_about_offsets_is_a_clear_error() {
    let model = model_copy("lying_header");
    rewrite_header(&model.join("text_encoder/model.safetensors"), |h| {
        h["text_projection.weight"]["data_offsets"] = serde_json::json!([0, 999_999_999]);
    });
    fails_clearly(embed_text_on(&model), &["text_projection.weight", "offsets"]);
}

#[test]
fn wrong_shapes_are_a_clear_error() {
    let model = model_copy("wrong_shape");
    rewrite_header(&model.join("text_encoder/model.safetensors"), |h| {
        h["text_projection.weight"]["shape"] = serde_json::json!([16, 64]);
    });
    fails_clearly(embed_text_on(&model), &["text_projection.weight", "shape [16, 64]", "[32, 32]"]);
}

#[test]
fn unexpected_and_missing_tensors_are_clear_errors() {
    let model = model_copy("renamed_tensor");
    rewrite_header(&model.join("text_encoder/model.safetensors"), |h| {
        let v = h.as_object_mut().unwrap().remove("text_projection.weight").unwrap();
        h["text_projektion.weight"] = v;
    });
    fails_clearly(embed_text_on(&model), &["missing tensor `text_projection.weight`"]);

    // A well-formed file with one tensor more (a copy of the projection's bytes after the others).
    let model = model_copy("extra_tensor");
    append_copy_of_tensor(
        &model.join("text_encoder/model.safetensors"),
        "text_projection.weight",
        "text_model.unknown_layer.weight",
    );
    fails_clearly(
        embed_text_on(&model),
        &["text_encoder/model.safetensors", "unexpected tensor", "text_model.unknown_layer.weight"],
    );
}

#[test]
fn missing_config_field_is_a_clear_error() {
    let model = model_copy("missing_field");
    let path = model.join("text_encoder/config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, cfg.to_string()).unwrap();
    fails_clearly(embed_text_on(&model), &["text_encoder/config.json", "hidden_size"]);
}

#[test]
fn missing_model_folder_is_a_clear_error() {
    fails_clearly(embed_text_on(Path::new("/nonexistent/model")), &["tokenizer", "not found"]);
}

#[test]
fn bad_images_are_clear_errors() {
    let dir = scratch("bad_images");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let mut corrupt = std::fs::read(asset("chelsea.png")).unwrap();
    corrupt.truncate(corrupt.len() / 3);
    let corrupt_path = dir.join("corrupt.png");
    std::fs::write(&corrupt_path, corrupt).unwrap();
    let huge = dir.join("huge.png");
    std::fs::write(&huge, png_header(30000, 30000)).unwrap();
    for (path, needle) in [(&empty, "0 bytes"), (&corrupt_path, "PNG"), (&huge, "30000")] {
        let out = bin()
            .args(["embed-image", "--model"])
            .arg(tiny_model())
            .arg("--out")
            .arg(dir.join("o.safetensors"))
            .arg(path)
            .output()
            .unwrap();
        fails_clearly(out, &[path.file_name().unwrap().to_str().unwrap(), needle]);
    }
}

/// A PNG signature and IHDR chunk for a `w`×`h` RGB image, with no pixel data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn bad_subject_spec_is_a_clear_error() {
    let out = bin()
        .args(["prior", "--model"])
        .arg(tiny_model())
        .args(["--prompt", "a cat", "--subject", "cat", "--out", "/tmp/x.safetensors"])
        .output()
        .unwrap();
    fails_clearly(out, &["KEYWORD=IMAGE"]);
}
