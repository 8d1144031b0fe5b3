//! CPU backend on candle-core: native (multi-threaded gemm) and wasm (the fallback when there is no
//! WebGPU adapter). Everything is f32.

use super::{Activation, Backend, WeightDType};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};

#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

fn check_rank(t: &Tensor, rank: usize, op: &str) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::Backend(format!("{op}: expected a rank-{rank} tensor, got shape {:?}", t.dims())));
    }
    Ok(())
}

fn apply_activation(x: Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Identity => x,
        Activation::GeluErf => x.gelu_erf()?,
        Activation::QuickGelu => {
            let sigmoid = (x.affine(-1.702, 0.0)?.exp()? + 1.0)?.recip()?;
            (x * sigmoid)?
        }
    })
}

impl Backend for CpuBackend {
    type Tensor = Tensor;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload_weight(&self, raw: &[u8], dtype: WeightDType, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if raw.len() != numel * dtype.size_in_bytes() {
            return Err(Error::Backend(format!(
                "weight of shape {shape:?} needs {} bytes, got {}",
                numel * dtype.size_in_bytes(),
                raw.len()
            )));
        }
        let values: Vec<f32> = match dtype {
            WeightDType::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            WeightDType::F16 => {
                raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            WeightDType::BF16 => {
                raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
        };
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
    }

    fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(data, shape, &Device::Cpu)?)
    }

    fn shape(&self, t: &Tensor) -> Vec<usize> {
        t.dims().to_vec()
    }

    async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    fn byte_size(&self, t: &Tensor) -> usize {
        t.elem_count() * t.dtype().size_in_bytes()
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        check_rank(a, 2, "matmul")?;
        check_rank(b, 2, "matmul")?;
        Ok(a.matmul(b)?)
    }

    fn linear(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        check_rank(x, 2, "linear")?;
        check_rank(w, 2, "linear")?;
        let mut y = x.matmul(&w.t()?)?;
        if let Some(b) = bias {
            y = y.broadcast_add(b)?;
        }
        apply_activation(y, act)
    }

    fn layer_norm(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
        check_rank(x, 2, "layer_norm")?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(gamma)?.broadcast_add(beta)?)
    }

    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f32, bias: Option<&Tensor>)
        -> Result<Tensor> {
        let (t, width) = q.dims2()?;
        let (s, kw) = k.dims2()?;
        if kw != width || v.dims2()? != (s, width) || heads == 0 || width % heads != 0 {
            return Err(Error::Backend(format!(
                "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
                q.dims(),
                k.dims(),
                v.dims()
            )));
        }
        let d = width / heads;
        let split = |x: &Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((n, heads, d))?.transpose(0, 1)?.contiguous()?)
        };
        let (qh, kh, vh) = (split(q, t)?, split(k, s)?, split(v, s)?);
        let mut scores = (qh.matmul(&kh.transpose(1, 2)?.contiguous()?)? * scale as f64)?;
        if let Some(b) = bias {
            scores = scores.broadcast_add(b)?;
        }
        let max = scores.max_keepdim(D::Minus1)?;
        let e = scores.broadcast_sub(&max)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let out = p.matmul(&vh)?; // [h, t, d]
        Ok(out.transpose(0, 1)?.reshape((t, width))?)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Backend(format!("add: shapes {:?} and {:?} differ", a.dims(), b.dims())));
        }
        Ok((a + b)?)
    }

    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        apply_activation(x.clone(), act)
    }

    fn gather_rows(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        check_rank(table, 2, "gather_rows")?;
        let rows = table.dim(0)?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Backend(format!("gather_rows: index {bad} out of range for {rows} rows")));
        }
        let idx = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
        Ok(table.index_select(&idx, 0)?)
    }

    fn concat_rows(&self, parts: &[&Tensor]) -> Result<Tensor> {
        Ok(Tensor::cat(parts, 0)?)
    }

    fn slice_rows(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        Ok(x.narrow(0, start, len)?.contiguous()?)
    }

    fn reshape(&self, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Ok(x.reshape(shape)?)
    }

    fn image_patches(&self, image: &Tensor, patch: usize) -> Result<Tensor> {
        let (c, h, w) = image.dims3()?;
        if patch == 0 || h % patch != 0 || w % patch != 0 {
            return Err(Error::Backend(format!("image_patches: {h}×{w} is not a multiple of patch {patch}")));
        }
        let (gh, gw) = (h / patch, w / patch);
        // [c, gh, p, gw, p] → [gh, gw, c, p, p]
        let x = image.reshape((c, gh, patch, gw, patch))?.permute((1, 3, 0, 2, 4))?.contiguous()?;
        Ok(x.reshape((gh * gw, c * patch * patch))?)
    }
}
