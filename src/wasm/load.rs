//! Loading through the page's `ModelIo` (shared by `Engine.load` and `Decoder.load`): a manifest's folders as
//! [`HttpFiles`], the weight plan announced before any weight is read, and upload progress.

use super::convert::to_js;
use crate::weights::http::{HttpFiles, ModelIo};
use crate::weights::{open_component, ModelFiles};
use js_sys::{Function, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// The model files behind a manifest's `(folder, URL)` pairs, read through `io`; `what` names the model in
/// errors.
pub(super) fn files_of(io: &ModelIo, folders: &[(&str, Option<&str>)], what: &str) -> Result<HttpFiles, JsError> {
    let mut files = HttpFiles::new(io.clone());
    for &(folder, url) in folders {
        let url = url.filter(|u| !u.is_empty()).ok_or_else(|| {
            JsError::new(&format!("{what} manifest: `{folder}` must be the URL of the folder that holds its files"))
        })?;
        files = files.with_folder(folder, url);
    }
    Ok(files)
}

/// One weight file of the plan `io.plan` receives.
#[derive(Serialize)]
struct PlannedFile {
    component: String,
    file: String,
    url: String,
    /// The bytes of the tensors that will be loaded from it (a JS number).
    bytes: f64,
}

/// Every weight file of `components` (`(folder, file stem)`) with the bytes of the tensors that will be
/// loaded (those `keep(component, tensor)` accepts), in loading order; and the bytes those tensors take as f32
/// (what the CPU backend holds).
async fn weight_plan<F: ModelFiles>(
    files: &F,
    components: &[(&str, &str)],
    keep: fn(&str, &str) -> bool,
) -> crate::Result<(Vec<PlannedFile>, u64)> {
    use crate::weights::ByteSource;
    let mut plan = Vec::new();
    let mut f32_bytes = 0u64;
    for &(component, stem) in components {
        let (_, weight_files) = open_component(files, component, stem).await?;
        for wf in weight_files {
            let bytes = wf.tensor_bytes_where(|tensor| keep(component, tensor));
            let kept = wf.header.tensors.iter().filter(|t| keep(component, &t.name));
            f32_bytes += kept.map(|t| 4 * t.shape.iter().product::<usize>() as u64).sum::<u64>();
            plan.push(PlannedFile {
                component: component.to_string(),
                file: wf.path.clone(),
                url: wf.source.name(),
                bytes: bytes as f64,
            });
        }
    }
    Ok((plan, f32_bytes))
}

/// A method of `io` the loader may or may not have (`plan`, `uploaded`).
fn optional_method(io: &ModelIo, name: &str) -> Option<Function> {
    Reflect::get(io, &JsValue::from_str(name)).ok()?.dyn_into::<Function>().ok()
}

/// Hands the weight plan to `io.plan` and returns the bytes the weights take as f32. The plan reads the
/// weight headers (the loader keeps them for the load proper); when it fails, the load itself reports the
/// same problem in its usual order, so the error is dropped here (`None`).
pub(super) async fn announce_plan(
    io: &ModelIo,
    files: &HttpFiles,
    components: &[(&str, &str)],
    keep: fn(&str, &str) -> bool,
) -> Option<u64> {
    let (plan, f32_bytes) = weight_plan(files, components, keep).await.ok()?;
    if let (Some(f), Ok(plan)) = (optional_method(io, "plan"), to_js(&plan)) {
        let _ = f.call1(io, &plan);
    }
    Some(f32_bytes)
}

/// After each tensor upload: `io.uploaded(component, bytesDone, bytesTotal)`, so the page can tell "all
/// weights are on the device, the engine is finishing" from "still downloading".
pub(super) fn upload_progress(io: &ModelIo) -> impl FnMut(&str, u64, u64) + '_ {
    let uploaded = optional_method(io, "uploaded");
    move |component: &str, done: u64, total: u64| {
        if let Some(f) = &uploaded {
            let _ = f.call3(
                io,
                &JsValue::from_str(component),
                &JsValue::from_f64(done as f64),
                &JsValue::from_f64(total as f64),
            );
        }
    }
}
