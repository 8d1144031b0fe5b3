//! A backend whose tensors are shapes only (as PyTorch's `meta` device): running a model's real forward on it
//! computes no value but checks every shape, counts the FLOPs and finds the largest activation.
//!
//! This is how the decoder knows, before its first step, whether a size fits the GPU's per-buffer limit, and
//! where the benchmarks get the FLOPs they divide by time: from the same forward that computes the picture, so
//! the figures cannot drift from the graph (a hand-written cost model would have to be kept in step with it).
//!
//! Counted FLOPs are those of the matrix products, 2 × multiply-adds: `matmul`, `linear`, `conv2d` and
//! attention's two products (`q·kᵀ`, `p·v`; the scores are never an activation: backends compute them in
//! bounded blocks). Norms, pointwise and layout ops count 0. Every tensor an op creates that is not a weight is
//! an activation, in f32 as both backends compute (4 bytes an element); weights are never counted, nor a
//! reshaped weight (a view, as on the real backends).

use super::{Activation, Backend, WeightDType};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// A tensor of the meta backend: its shape, and whether it is (a view of) a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaTensor {
    shape: Vec<usize>,
    weight: bool,
}

impl MetaTensor {
    /// A weight of `shape` with no values: what a shapes-only [`crate::weights::WeightStore`] hands a model.
    pub fn weight(shape: &[usize]) -> MetaTensor {
        MetaTensor { shape: shape.to_vec(), weight: true }
    }

    fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What the ops run on a [`MetaBackend`] computed: floating-point operations (for the benchmarks' FLOP/s) and
/// the largest single activation (checked against the GPU's per-buffer limit before a decode starts).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub largest_activation_bytes: u64,
}

/// The shapes-only backend. Clones share one tally.
#[derive(Clone, Debug, Default)]
pub struct MetaBackend {
    tally: Arc<Mutex<Cost>>,
}

const F32_BYTES: u64 = 4;

fn bad(op: &str, what: String) -> Error {
    Error::Backend(format!("{op}: {what}"))
}

fn dims2(t: &MetaTensor, op: &str) -> Result<(usize, usize)> {
    match t.shape[..] {
        [rows, cols] => Ok((rows, cols)),
        _ => Err(bad(op, format!("expected a rank-2 tensor, got shape {:?}", t.shape))),
    }
}

fn same_shape(a: &MetaTensor, b: &MetaTensor, op: &str) -> Result<()> {
    if a.shape != b.shape {
        return Err(bad(op, format!("shapes {:?} and {:?} differ", a.shape, b.shape)));
    }
    Ok(())
}

/// The channels of a feature map `[height·width, c]`.
fn feature_map(x: &MetaTensor, height: usize, width: usize, op: &str) -> Result<usize> {
    let (rows, c) = dims2(x, op)?;
    if rows != height * width {
        return Err(bad(op, format!("{rows} rows is not a {height}×{width} feature map")));
    }
    Ok(c)
}

fn vector_of(t: &MetaTensor, n: usize, what: &str, op: &str) -> Result<()> {
    if t.shape != [n] {
        return Err(bad(op, format!("{what} {:?} is not [{n}]", t.shape)));
    }
    Ok(())
}

impl MetaBackend {
    pub fn new() -> Self {
        MetaBackend::default()
    }

    /// An activation of `shape` with no values: a model's input, counted like any activation.
    pub fn input(&self, shape: &[usize]) -> MetaTensor {
        self.activation_of(shape.to_vec(), 0.0)
    }

    /// The tally since the last call (or since the backend was made), and a fresh one from now on.
    pub fn take_cost(&self) -> Cost {
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `forward` on this backend and returns what it computed.
    pub fn measure<T>(&self, forward: impl FnOnce() -> Result<T>) -> Result<Cost> {
        self.take_cost();
        forward()?;
        Ok(self.take_cost())
    }

    /// A new activation made by an op that computed `flops`.
    fn activation_of(&self, shape: Vec<usize>, flops: f64) -> MetaTensor {
        let t = MetaTensor { shape, weight: false };
        let bytes = t.elements() as u64 * F32_BYTES;
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.flops += flops;
        tally.largest_activation_bytes = tally.largest_activation_bytes.max(bytes);
        t
    }

    fn out(&self, shape: Vec<usize>, flops: f64) -> Result<MetaTensor> {
        Ok(self.activation_of(shape, flops))
    }
}

impl Backend for MetaBackend {
    type Tensor = MetaTensor;

    fn name(&self) -> &'static str {
        "meta"
    }

    fn with_int8_weights(&self) -> Self {
        self.clone()
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<MetaTensor> {
        dtype.check_bytes(raw.len(), shape)?;
        Ok(MetaTensor::weight(shape))
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<MetaTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(bad("from_f32", format!("{} values do not fill shape {shape:?}", data.len())));
        }
        self.out(shape.to_vec(), 0.0)
    }

    fn shape(&self, t: &MetaTensor) -> Vec<usize> {
        t.shape.clone()
    }

    async fn read_f32(&self, _: &MetaTensor) -> Result<Vec<f32>> {
        Err(Error::Backend("the meta backend holds shapes only: there are no values to read".into()))
    }

    fn byte_size(&self, t: &MetaTensor) -> usize {
        t.elements() * F32_BYTES as usize
    }

    fn matmul(&self, a: &MetaTensor, b: &MetaTensor) -> Result<MetaTensor> {
        let ((m, k), (k2, n)) = (dims2(a, "matmul")?, dims2(b, "matmul")?);
        if k != k2 {
            return Err(bad("matmul", format!("{:?} · {:?} do not chain", a.shape, b.shape)));
        }
        self.out(vec![m, n], 2.0 * (m * k * n) as f64)
    }

    fn linear(&self, x: &MetaTensor, w: &MetaTensor, bias: Option<&MetaTensor>, _: Activation) -> Result<MetaTensor> {
        let ((m, k), (n, k2)) = (dims2(x, "linear")?, dims2(w, "linear")?);
        if k != k2 {
            return Err(bad("linear", format!("x {:?} does not fit weight {:?}", x.shape, w.shape)));
        }
        if let Some(b) = bias {
            vector_of(b, n, "bias", "linear")?;
        }
        self.out(vec![m, n], 2.0 * (m * k * n) as f64)
    }

    fn layer_norm(&self, x: &MetaTensor, gamma: &MetaTensor, beta: &MetaTensor, _: f64) -> Result<MetaTensor> {
        let (_, k) = dims2(x, "layer_norm")?;
        vector_of(gamma, k, "gamma", "layer_norm")?;
        vector_of(beta, k, "beta", "layer_norm")?;
        self.out(x.shape.clone(), 0.0)
    }

    fn attention(
        &self,
        q: &MetaTensor,
        k: &MetaTensor,
        v: &MetaTensor,
        heads: usize,
        _: f32,
        bias: Option<&MetaTensor>,
    ) -> Result<MetaTensor> {
        let ((t, width), (s, kw)) = (dims2(q, "attention")?, dims2(k, "attention")?);
        if kw != width || v.shape != [s, width] || heads == 0 || width % heads != 0 {
            return Err(bad(
                "attention",
                format!("q {:?}, k {:?}, v {:?} do not fit {heads} heads", q.shape, k.shape, v.shape),
            ));
        }
        if let Some(b) = bias {
            if b.shape != [t, s] {
                return Err(bad("attention", format!("bias {:?} is not [{t}, {s}]", b.shape)));
            }
        }
        // q·kᵀ and p·v, each t·s·width multiply-adds over all heads.
        self.out(vec![t, width], 4.0 * (t * s * width) as f64)
    }

    fn add(&self, a: &MetaTensor, b: &MetaTensor) -> Result<MetaTensor> {
        same_shape(a, b, "add")?;
        self.out(a.shape.clone(), 0.0)
    }

    fn activation(&self, x: &MetaTensor, _: Activation) -> Result<MetaTensor> {
        self.out(x.shape.clone(), 0.0)
    }

    fn gather_rows(&self, table: &MetaTensor, ids: &[u32]) -> Result<MetaTensor> {
        let (rows, cols) = dims2(table, "gather_rows")?;
        if let Some(bad_id) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(bad("gather_rows", format!("index {bad_id} out of range for {rows} rows")));
        }
        self.out(vec![ids.len(), cols], 0.0)
    }

    fn concat_rows(&self, parts: &[&MetaTensor]) -> Result<MetaTensor> {
        let cols = parts.first().map(|p| dims2(p, "concat_rows")).transpose()?.map_or(0, |(_, c)| c);
        let mut rows = 0;
        for p in parts {
            let (r, c) = dims2(p, "concat_rows")?;
            if c != cols {
                return Err(bad("concat_rows", format!("{c} columns next to {cols}")));
            }
            rows += r;
        }
        self.out(vec![rows, cols], 0.0)
    }

    fn slice_rows(&self, x: &MetaTensor, start: usize, len: usize) -> Result<MetaTensor> {
        match x.shape.split_first() {
            Some((&rows, rest)) if start + len <= rows => self.out([&[len], rest].concat(), 0.0),
            _ => Err(bad("slice_rows", format!("rows {start}..{} of {:?}", start + len, x.shape))),
        }
    }

    fn reshape(&self, x: &MetaTensor, shape: &[usize]) -> Result<MetaTensor> {
        if shape.iter().product::<usize>() != x.elements() {
            return Err(bad("reshape", format!("{:?} cannot become {shape:?}", x.shape)));
        }
        if x.weight {
            return Ok(MetaTensor::weight(shape));
        }
        self.out(shape.to_vec(), 0.0)
    }

    fn image_patches(&self, image: &MetaTensor, patch: usize) -> Result<MetaTensor> {
        let &[c, h, w] = &image.shape[..] else {
            return Err(bad("image_patches", format!("expected [c, h, w], got {:?}", image.shape)));
        };
        if patch == 0 || h % patch != 0 || w % patch != 0 {
            return Err(bad("image_patches", format!("{h}×{w} is not a multiple of patch {patch}")));
        }
        self.out(vec![(h / patch) * (w / patch), c * patch * patch], 0.0)
    }

    fn conv2d(
        &self,
        x: &MetaTensor,
        height: usize,
        width: usize,
        weight: &MetaTensor,
        bias: Option<&MetaTensor>,
        kernel: usize,
    ) -> Result<MetaTensor> {
        let cin = feature_map(x, height, width, "conv2d")?;
        let (cout, wk) = dims2(weight, "conv2d")?;
        if kernel.is_multiple_of(2) || wk != cin * kernel * kernel {
            return Err(bad(
                "conv2d",
                format!("weight {:?} does not fit {cin} input channels and an odd kernel {kernel}", weight.shape),
            ));
        }
        if let Some(b) = bias {
            vector_of(b, cout, "bias", "conv2d")?;
        }
        self.out(vec![height * width, cout], 2.0 * (height * width * wk * cout) as f64)
    }

    fn group_norm(
        &self,
        x: &MetaTensor,
        groups: usize,
        gamma: &MetaTensor,
        beta: &MetaTensor,
        _: f64,
    ) -> Result<MetaTensor> {
        let (_, c) = dims2(x, "group_norm")?;
        if groups == 0 || c % groups != 0 {
            return Err(bad("group_norm", format!("{c} channels cannot be split into {groups} groups")));
        }
        vector_of(gamma, c, "gamma", "group_norm")?;
        vector_of(beta, c, "beta", "group_norm")?;
        self.out(x.shape.clone(), 0.0)
    }

    fn avg_pool_2x2(&self, x: &MetaTensor, height: usize, width: usize) -> Result<MetaTensor> {
        let c = feature_map(x, height, width, "avg_pool_2x2")?;
        if !height.is_multiple_of(2) || !width.is_multiple_of(2) {
            return Err(bad("avg_pool_2x2", format!("{height}×{width} is not even")));
        }
        self.out(vec![(height / 2) * (width / 2), c], 0.0)
    }

    fn resize_nearest(
        &self,
        x: &MetaTensor,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
    ) -> Result<MetaTensor> {
        let c = feature_map(x, height, width, "resize_nearest")?;
        if (height == 0 || width == 0) && out_height * out_width > 0 {
            return Err(bad("resize_nearest", "empty input".into()));
        }
        self.out(vec![out_height * out_width, c], 0.0)
    }

    fn concat_cols(&self, parts: &[&MetaTensor]) -> Result<MetaTensor> {
        let rows = parts.first().map(|p| dims2(p, "concat_cols")).transpose()?.map_or(0, |(r, _)| r);
        let mut cols = 0;
        for p in parts {
            let (r, c) = dims2(p, "concat_cols")?;
            if r != rows {
                return Err(bad("concat_cols", format!("{r} rows next to {rows}")));
            }
            cols += c;
        }
        self.out(vec![rows, cols], 0.0)
    }

    fn mul(&self, a: &MetaTensor, b: &MetaTensor) -> Result<MetaTensor> {
        same_shape(a, b, "mul")?;
        self.out(a.shape.clone(), 0.0)
    }

    fn scale_shift(&self, x: &MetaTensor, scale: &MetaTensor, shift: &MetaTensor) -> Result<MetaTensor> {
        let (_, c) = dims2(x, "scale_shift")?;
        if scale.shape != [1, c] || shift.shape != [1, c] {
            return Err(bad(
                "scale_shift",
                format!("scale {:?} and shift {:?} must be [1, {c}]", scale.shape, shift.shape),
            ));
        }
        self.out(x.shape.clone(), 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn products_count_two_flops_per_multiply_add_and_the_largest_activation_wins() {
        let be = MetaBackend::new();
        let w = MetaTensor::weight(&[8, 4 * 9]);
        let cost = be
            .measure(|| {
                let x = be.input(&[6 * 5, 4]);
                let y = be.conv2d(&x, 6, 5, &w, None, 3)?; // [30, 8]: 2·30·36·8
                let q = be.linear(&y, &MetaTensor::weight(&[16, 8]), None, Activation::Identity)?; // [30, 16]: 2·30·8·16
                be.attention(&q, &q, &q, 2, 1.0, None) // 4·30·30·16
            })
            .unwrap();
        assert_eq!(cost.flops, (2 * 30 * 36 * 8 + 2 * 30 * 8 * 16 + 4 * 30 * 30 * 16) as f64);
        assert_eq!(cost.largest_activation_bytes, 30 * 16 * 4);
    }

    #[test]
    fn weights_and_their_reshapes_are_not_activations() {
        let be = MetaBackend::new();
        let w = be.upload_weight(&[0; 2 * 100 * 100], WeightDType::F16, &[100, 100]).unwrap();
        let v = be.reshape(&w, &[10_000]).unwrap();
        assert_eq!(be.take_cost(), Cost::default());
        let x = be.slice_rows(&v, 0, 3).unwrap();
        assert_eq!((be.shape(&x), be.take_cost().largest_activation_bytes), (vec![3], 12));
    }

    #[test]
    fn shape_errors_are_the_real_backends_errors() {
        let be = MetaBackend::new();
        let x = be.input(&[12, 4]);
        assert!(be
            .conv2d(&x, 3, 3, &MetaTensor::weight(&[8, 36]), None, 3)
            .unwrap_err()
            .to_string()
            .contains("not a 3×3 feature map"));
        assert!(be.add(&x, &be.input(&[4, 12])).is_err());
        assert!(be.linear(&x, &MetaTensor::weight(&[5, 3]), None, Activation::Identity).is_err());
        let read = std::pin::pin!(be.read_f32(&x));
        let polled = read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        assert!(matches!(polled, std::task::Poll::Ready(Err(_))), "no values to read");
    }
}
