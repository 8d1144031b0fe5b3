//! In the browser (wasm-bindgen-test, headless Chromium, CPU backend): the JavaScript API itself — `Engine`,
//! `Decoder` and the model-free tools as `www/lib/worker.js` calls them, with JS values in and out. The tiny
//! models are read through a `ModelIo` over in-memory files. Requests built as plain JS objects compute the
//! goldens; results are plain objects whose number arrays are typed arrays; a request field of the wrong type
//! is an Error naming it.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use lambda_eclipse::models::conv::nchw_to_rows;
use lambda_eclipse::tensor_file;
use lambda_eclipse::wasm::{canny_preview, inspect_image, interpolate_grid, Decoder, Engine};
use lambda_eclipse::weights::http::ModelIo;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! shared {
    ($p:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/", $p)).as_slice()
    };
}

/// A `ModelIo` serving `files` (URL → bytes) as the page's `ModelReader` would: `size(url)` and
/// `read(url, start, len, tensor)` answer with promises; an unknown URL is a 404.
fn memory_io(files: HashMap<String, &'static [u8]>) -> ModelIo {
    let files = Rc::new(files);
    let not_found =
        |url: &str| Promise::reject(&js_sys::Error::new(&format!("{url}: file not found (HTTP 404)")).into());
    let sizes = files.clone();
    let size = Closure::<dyn Fn(String) -> Promise>::new(move |url: String| match sizes.get(&url) {
        Some(bytes) => Promise::resolve(&JsValue::from(bytes.len() as f64)),
        None => not_found(&url),
    });
    let read = Closure::<dyn Fn(String, f64, f64, bool) -> Promise>::new(
        move |url: String, start: f64, len: f64, _tensor: bool| match files.get(&url) {
            Some(bytes) => {
                Promise::resolve(&JsValue::from(Uint8Array::from(&bytes[start as usize..(start + len) as usize])))
            }
            None => not_found(&url),
        },
    );
    let io = Object::new();
    Reflect::set(&io, &"size".into(), &size.into_js_value()).unwrap();
    Reflect::set(&io, &"read".into(), &read.into_js_value()).unwrap();
    io.unchecked_into()
}

/// A plain JS object with these fields.
fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

/// The message of an Error thrown across the boundary.
fn message(e: impl Into<JsValue>) -> String {
    let e: JsValue = e.into();
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_else(|| format!("{e:?}"))
}

fn f32s(v: &[f32]) -> JsValue {
    Float32Array::from(v).into()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// `key` of `v` as a Float32Array's values; fails unless it is one.
fn float32_field(v: &JsValue, key: &str) -> Vec<f32> {
    get(v, key).dyn_into::<Float32Array>().unwrap_or_else(|_| panic!("`{key}` should be a Float32Array")).to_vec()
}

const LAMBDA: &str = "mem://lambda-tiny";
const DECODER: &str = "mem://kandinsky-tiny";

fn lambda_manifest() -> JsValue {
    let folders = ["tokenizer", "text_encoder", "image_encoder", "image_processor", "prior"];
    object(&folders.map(|f| (f, JsValue::from_str(&format!("{LAMBDA}/{f}")))))
}

async fn load_tiny_engine() -> Engine {
    let files = HashMap::from([
        (format!("{LAMBDA}/tokenizer/tokenizer.json"), shared!("goldens/lambda-tiny/model/tokenizer/tokenizer.json")),
        (
            format!("{LAMBDA}/tokenizer/tokenizer_config.json"),
            shared!("goldens/lambda-tiny/model/tokenizer/tokenizer_config.json"),
        ),
        (format!("{LAMBDA}/text_encoder/config.json"), shared!("goldens/lambda-tiny/model/text_encoder/config.json")),
        (
            format!("{LAMBDA}/text_encoder/model.safetensors"),
            shared!("goldens/lambda-tiny/model/text_encoder/model.safetensors"),
        ),
        (format!("{LAMBDA}/image_encoder/config.json"), shared!("goldens/lambda-tiny/model/image_encoder/config.json")),
        (
            format!("{LAMBDA}/image_encoder/model.safetensors"),
            shared!("goldens/lambda-tiny/model/image_encoder/model.safetensors"),
        ),
        (
            format!("{LAMBDA}/image_processor/preprocessor_config.json"),
            shared!("goldens/lambda-tiny/model/image_processor/preprocessor_config.json"),
        ),
        (format!("{LAMBDA}/prior/config.json"), shared!("goldens/lambda-tiny/model/prior/config.json")),
        (
            format!("{LAMBDA}/prior/diffusion_pytorch_model.safetensors"),
            shared!("goldens/lambda-tiny/model/prior/diffusion_pytorch_model.safetensors"),
        ),
    ]);
    Engine::load(lambda_manifest(), "cpu".into(), memory_io(files)).await.map_err(message).unwrap()
}

fn cat_glasses(name: &str) -> Vec<f32> {
    tensor_file::read_f32(shared!("goldens/lambda-tiny/cat_glasses.safetensors"), name, "cat_glasses").unwrap().1
}

/// The cat_glasses request as the page sends it, with `subjects` replaced when given.
fn cat_glasses_request(subjects: Option<JsValue>) -> JsValue {
    let subject =
        |keyword: &str, image: &[u8]| object(&[("keyword", keyword.into()), ("image", Uint8Array::from(image).into())]);
    let subjects = subjects.unwrap_or_else(|| {
        Array::of2(
            &subject("cat", shared!("assets/images/chelsea.png")),
            &subject("glasses", shared!("assets/images/coffee.png")),
        )
        .into()
    });
    object(&[
        ("prompt", "a cat wearing glasses at a park".into()),
        ("subjects", subjects),
        ("noise", f32s(&cat_glasses("noise"))),
        ("control", JsValue::UNDEFINED),
    ])
}

#[wasm_bindgen_test]
async fn engine_prior_from_a_plain_js_request_matches_the_golden_and_returns_typed_arrays() {
    let engine = load_tiny_engine().await;
    assert_eq!(engine.backend(), "cpu");
    assert_eq!(engine.fallback_reason(), None);
    let r = engine.prior(cat_glasses_request(None)).await.map_err(message).unwrap();
    // 1e-4: the bound tests/wasm_golden.rs holds the same computation to; the boundary only copies values.
    let d = max_abs(&float32_field(&r, "imageEmbeds"), &cat_glasses("image_embeds"));
    assert!(d <= 1e-4, "imageEmbeds differ from the golden by {d}");
    let d = max_abs(&float32_field(&r, "negativeImageEmbeds"), &cat_glasses("negative_image_embeds"));
    assert!(d <= 1e-4, "negativeImageEmbeds differ from the golden by {d}");
    assert_eq!(float32_field(&r, "noise"), cat_glasses("noise"), "the given ε comes back as it was");
    for key in ["encoderHiddenStates", "controlEmbeds", "textEmbeds"] {
        assert!(!float32_field(&r, key).is_empty(), "{key}");
    }
    assert_eq!(get(&r, "warnings").dyn_into::<Array>().expect("warnings: an Array").length(), 0);
    let timings = get(&r, "timings");
    assert!(timings.is_object() && !timings.is_instance_of::<js_sys::Map>(), "timings: a plain object, not a Map");
    let stages = Object::keys(timings.unchecked_ref::<Object>());
    assert!(stages.length() > 0 && stages.iter().all(|k| get(&timings, &k.as_string().unwrap()).as_f64().is_some()));
    assert!(!Reflect::has(&r, &"cannyEdges".into()).unwrap(), "no control image: no cannyEdges key");

    let e = engine.embed_text("a cat wearing glasses at a park".into()).await.map_err(message).unwrap();
    assert!(get(&e, "inputIds").is_instance_of::<js_sys::Int32Array>(), "inputIds: an Int32Array");
    let d = max_abs(&float32_field(&e, "textEmbeds"), &cat_glasses("text_embeds"));
    assert!(d <= 1e-4, "textEmbeds differ from the golden by {d}");
    assert_eq!(get(&e, "truncated").as_bool(), Some(false));
}

#[wasm_bindgen_test]
async fn engine_requests_of_the_wrong_shape_are_errors_that_name_the_field() {
    let engine = load_tiny_engine().await;
    let bad_subjects = Array::of2(
        &object(&[("keyword", "cat".into()), ("image", Uint8Array::from(shared!("assets/images/chelsea.png")).into())]),
        &object(&[("keyword", 7.into()), ("image", Uint8Array::new_with_length(1).into())]),
    );
    let e = message(engine.prior(cat_glasses_request(Some(bad_subjects.into()))).await.unwrap_err());
    assert!(e.starts_with("prior request: subjects[1].keyword: invalid type"), "{e}");

    let plain_array_noise = cat_glasses_request(None);
    Reflect::set(&plain_array_noise, &"noise".into(), &Array::of2(&1.into(), &2.into())).unwrap();
    let e = message(engine.prior(plain_array_noise).await.unwrap_err());
    assert_eq!(e, "prior request: noise: expected a Float32Array");

    let e = message(engine.prior(object(&[("prompt", "a cat".into()), ("seed", (-1).into())])).await.unwrap_err());
    assert_eq!(e, "seed must be a non-negative integer");
    let e = message(engine.prior(object(&[("seed", 1.into())])).await.unwrap_err());
    assert_eq!(e, "prior request: missing field `prompt`");
    let e = message(engine.match_keywords("a cat".into(), Array::of1(&3.into()).into()).unwrap_err());
    assert!(e.starts_with("keywords: [0]: invalid type"), "{e}");
    let e = message(engine.embed_images(Array::of1(&"chelsea.png".into()).into()).await.unwrap_err());
    assert_eq!(e, "images: [0]: expected a Uint8Array of the file's bytes");
}

#[wasm_bindgen_test]
async fn engine_load_names_a_bad_manifest_backend_or_weights_before_reading_anything() {
    let nothing = || memory_io(HashMap::new());
    let manifest = lambda_manifest();
    Reflect::delete_property(manifest.unchecked_ref::<Object>(), &"prior".into()).unwrap();
    let e = message(Engine::load(manifest, "cpu".into(), nothing()).await.err().unwrap());
    assert_eq!(e, "model manifest: `prior` must be the URL of the folder that holds its files");
    let manifest = lambda_manifest();
    Reflect::set(&manifest, &"tokenizer".into(), &5.into()).unwrap();
    let e = message(Engine::load(manifest, "cpu".into(), nothing()).await.err().unwrap());
    assert!(e.starts_with("model manifest: tokenizer: invalid type"), "{e}");
    let e = message(Engine::load(lambda_manifest(), "cuda".into(), nothing()).await.err().unwrap());
    assert_eq!(e, r#"backend must be "auto", "webgpu" or "cpu", not "cuda""#);
    let e =
        message(Decoder::load(decoder_manifest(), "cpu".into(), nothing(), Some("bf16".into())).await.err().unwrap());
    assert_eq!(e, r#"weights must be "f16", "int8" or "f32", not "bf16""#);
}

fn decoder_manifest() -> JsValue {
    object(&["unet", "movq", "scheduler"].map(|f| (f, JsValue::from_str(&format!("{DECODER}/{f}")))))
}

async fn load_tiny_decoder(weights: &str) -> Decoder {
    let files = HashMap::from([
        (format!("{DECODER}/unet/config.json"), shared!("goldens/kandinsky-tiny/model/unet/config.json")),
        (
            format!("{DECODER}/unet/diffusion_pytorch_model.safetensors"),
            shared!("goldens/kandinsky-tiny/model/unet/diffusion_pytorch_model.safetensors"),
        ),
        (format!("{DECODER}/movq/config.json"), shared!("goldens/kandinsky-tiny/model/movq/config.json")),
        (
            format!("{DECODER}/movq/diffusion_pytorch_model.safetensors"),
            shared!("goldens/kandinsky-tiny/model/movq/diffusion_pytorch_model.safetensors"),
        ),
        (
            format!("{DECODER}/scheduler/scheduler_config.json"),
            shared!("goldens/kandinsky-tiny/model/scheduler/scheduler_config.json"),
        ),
    ]);
    Decoder::load(decoder_manifest(), "cpu".into(), memory_io(files), Some(weights.into()))
        .await
        .map_err(message)
        .unwrap()
}

fn ddpm_nocfg(name: &str) -> Vec<f32> {
    tensor_file::read_f32(shared!("goldens/kandinsky-tiny/ddpm_nocfg.safetensors"), name, "ddpm_nocfg").unwrap().1
}

/// The `ddpm_nocfg` golden case (3 DDPM steps, guidance 1, 64×64, diffusers' own noise) as the page sends it.
fn ddpm_nocfg_request() -> JsValue {
    let noise = object(&[
        ("initialLatents", f32s(&ddpm_nocfg("initial_latents"))),
        ("stepNoise", f32s(&ddpm_nocfg("step_noise"))),
    ]);
    object(&[
        ("imageEmbeds", f32s(&ddpm_nocfg("image_embeds"))),
        ("negativeImageEmbeds", f32s(&ddpm_nocfg("negative_image_embeds"))),
        ("steps", 3.into()),
        ("guidance", 1.into()),
        ("width", 64.into()),
        ("height", 64.into()),
        ("scheduler", "ddpm".into()),
        ("noise", noise),
    ])
}

#[wasm_bindgen_test]
async fn decoder_decode_from_a_plain_js_request_matches_the_golden_image() {
    let decoder = load_tiny_decoder("f32").await;
    assert_eq!((decoder.backend().as_str(), decoder.weights().as_str()), ("cpu", "f32"));
    let steps = Rc::new(Cell::new(0));
    let seen = steps.clone();
    let on_step = Closure::<dyn Fn(JsValue)>::new(move |info: JsValue| {
        seen.set(seen.get() + 1);
        assert_eq!(get(&info, "step").as_f64(), Some(seen.get() as f64));
        assert_eq!(get(&info, "total").as_f64(), Some(3.0));
        assert!(get(&get(&info, "preview"), "rgba").is_instance_of::<Uint8ClampedArray>(), "preview.rgba");
    });
    let r = decoder
        .decode(ddpm_nocfg_request(), Some(on_step.as_ref().unchecked_ref::<Function>().clone()))
        .await
        .map_err(message)
        .unwrap();
    assert_eq!(steps.get(), 3, "one onStep call per step");
    assert_eq!(
        (get(&r, "width").as_f64(), get(&r, "height").as_f64(), get(&r, "steps").as_f64()),
        (Some(64.0), Some(64.0), Some(3.0))
    );
    assert_eq!(get(&r, "scheduler").as_string().as_deref(), Some("ddpm"));
    assert_eq!(get(&r, "stepMs").dyn_into::<Array>().expect("stepMs: an Array").length(), 3);
    let rgba = get(&r, "rgba").dyn_into::<Uint8ClampedArray>().expect("rgba: a Uint8ClampedArray").to_vec();
    // The bound tests/wasm_decoder.rs holds the same decode to: 8-bit values equal or off by one on ≤ 0.1 %.
    let want = nchw_to_rows(&ddpm_nocfg("image_uint8"), 3, 64, 64);
    let rgb: Vec<u8> = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert!(rgba.chunks_exact(4).all(|p| p[3] == 255), "opaque");
    let off: Vec<i32> = rgb.iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
    assert!(off.iter().all(|&o| o <= 1), "8-bit values off by more than one");
    let ones = off.iter().filter(|&&o| o == 1).count();
    assert!(ones <= off.len() / 1000, "{ones} 8-bit values off by one");
}

#[wasm_bindgen_test]
async fn decoder_requests_of_the_wrong_shape_are_errors_that_name_the_field_and_the_cpu_keeps_f32() {
    let decoder = load_tiny_decoder("int8").await;
    assert_eq!(decoder.weights(), "f32", "the browser's CPU keeps f32 whatever is asked");
    let request = ddpm_nocfg_request();
    Reflect::delete_property(request.unchecked_ref::<Object>(), &"imageEmbeds".into()).unwrap();
    assert_eq!(message(decoder.decode(request, None).await.unwrap_err()), "imageEmbeds (a Float32Array) is required");
    let request = ddpm_nocfg_request();
    Reflect::set(&request, &"steps".into(), &1.5.into()).unwrap();
    assert_eq!(message(decoder.decode(request, None).await.unwrap_err()), "steps must be a non-negative integer");
    let request = ddpm_nocfg_request();
    Reflect::set(&request, &"scheduler".into(), &5.into()).unwrap();
    let e = message(decoder.decode(request, None).await.unwrap_err());
    assert!(e.starts_with("decode request: scheduler: invalid type"), "{e}");
    let request = ddpm_nocfg_request();
    Reflect::set(&get(&request, "noise"), &"stepNoise".into(), &"none".into()).unwrap();
    let e = message(decoder.decode(request, None).await.unwrap_err());
    assert_eq!(e, "decode request: noise.stepNoise: expected a Float32Array");
}

#[wasm_bindgen_test]
fn model_free_tools_return_plain_objects_with_typed_arrays() {
    let photo = shared!("assets/images/chelsea.png");
    let want = lambda_eclipse::image::decode::decode_rgb(photo, &Default::default()).unwrap();
    let size = inspect_image(photo).map_err(message).unwrap();
    assert_eq!(
        (get(&size, "width").as_f64(), get(&size, "height").as_f64()),
        (Some(want.width() as f64), Some(want.height() as f64))
    );

    let canny = canny_preview(photo, 100.0, 200.0).map_err(message).unwrap();
    let (w, h) = (get(&canny, "width").as_f64().unwrap() as usize, get(&canny, "height").as_f64().unwrap() as usize);
    let edges = get(&canny, "edges").dyn_into::<Uint8Array>().expect("edges: a Uint8Array").to_vec();
    let rgba = get(&canny, "rgba").dyn_into::<Uint8ClampedArray>().expect("rgba: a Uint8ClampedArray").to_vec();
    assert_eq!((edges.len(), rgba.len()), (w * h, 4 * w * h));
    assert!(edges.iter().zip(rgba.chunks_exact(4)).all(|(&e, p)| p == [e, e, e, 255]));

    let corners = [[0.0f32, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]];
    let grid =
        interpolate_grid(corners.iter().map(|c| f32s(c)).collect::<Array>().into(), 2.0).map_err(message).unwrap();
    let got: Vec<Vec<f32>> = grid
        .dyn_into::<Array>()
        .unwrap()
        .iter()
        .map(|v| v.dyn_into::<Float32Array>().expect("a Float32Array").to_vec())
        .collect();
    let [a, b, c, d] = &corners;
    assert_eq!(got, lambda_eclipse::pipeline::interpolate::bilinear_grid(a, b, c, d, 2).unwrap());
    let mixed: Array = [f32s(a), f32s(b), Array::of2(&4.into(), &5.into()).into(), f32s(d)].into_iter().collect();
    assert_eq!(
        message(interpolate_grid(mixed.into(), 2.0).unwrap_err()),
        "interpolation corners: [2]: expected a Float32Array"
    );
    let three: Array = [f32s(a), f32s(b), f32s(c)].into_iter().collect();
    assert_eq!(
        message(interpolate_grid(three.into(), 2.0).unwrap_err()),
        "interpolation needs 4 corner embeddings, got 3"
    );
}
