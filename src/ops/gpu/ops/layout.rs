//! Moving elements without arithmetic: gathering embedding rows (from f32, packed f16 or int8 tables, split
//! or not), stacking and slicing rows (buffer copies, or unpack_f16.wgsl for packed parts), views, and
//! concatenating columns (copy_cols.wgsl).

use crate::error::Result;
use crate::ops::gpu::kernels::params::{CopyColsParams, GatherRowsParams};
use crate::ops::gpu::kernels::Kernel;
use crate::ops::gpu::tensor::{dims2, GpuDType, GpuTensor};
use crate::ops::gpu::{backend_err, u32_of, GpuBackend};

pub fn gather_rows(be: &GpuBackend, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
    let (rows, cols) = dims2(table, "gather_rows")?;
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
        return Err(backend_err(format!("gather_rows: index {bad} out of range for {rows} rows")));
    }
    let out = be.alloc_f32(&[ids.len(), cols], "gather_rows")?;
    let n = ids.len() * cols;
    if n == 0 {
        return Ok(out);
    }
    let ids_buf = be.upload(bytemuck::cast_slice(ids), "gather_rows ids")?;
    if table.dtype.is_blocks() {
        be.check_whole(table, "gather_rows")?;
        return be.dequantize_rows(table, ids, &out);
    }
    let (table_type, scales) = match (table.dtype, &table.scales) {
        (GpuDType::F32, _) => (0, &be.inner.dummy),
        (GpuDType::F16, _) => (1, &be.inner.dummy),
        (GpuDType::I8, Some(s)) if s.row_len == cols => (2, &s.buf),
        (GpuDType::I8, _) => {
            return Err(backend_err(format!("gather_rows: int8 table {:?} without per-row scales", table.shape)))
        }
        (GpuDType::Q8_0 | GpuDType::Q4_0, _) => return Err(backend_err("gather_rows: blocks are read above")),
    };
    // One dispatch per row chunk of a split table; each writes the output rows whose id it holds.
    for (first, count, table_buf) in table.row_chunks() {
        if !ids.iter().any(|&i| (first..first + count).contains(&(i as usize))) {
            continue;
        }
        let params = GatherRowsParams {
            rows: u32_of(ids.len(), "rows")?,
            cols: u32_of(cols, "cols")?,
            table_type,
            first: u32_of(first, "first row")?,
            count: u32_of(count, "row count")?,
            ..Default::default()
        };
        be.dispatch(Kernel::GatherRows, &params, &[table_buf, &ids_buf, out.buffer(), scales], be.groups_1d(n));
    }
    Ok(out)
}

pub fn concat_rows(be: &GpuBackend, parts: &[&GpuTensor]) -> Result<GpuTensor> {
    let first = parts.first().ok_or_else(|| backend_err("concat_rows: no tensors"))?;
    if first.shape.is_empty()
        || parts.iter().any(|p| p.shape.len() != first.shape.len() || p.shape[1..] != first.shape[1..])
    {
        let shapes: Vec<_> = parts.iter().map(|p| &p.shape).collect();
        return Err(backend_err(format!("concat_rows: shapes {shapes:?} do not stack")));
    }
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let out = be.alloc_f32(&shape, "concat_rows")?;
    let mut offset = 0;
    for part in parts {
        be.check_whole(part, "concat_rows")?;
        let part = if matches!(part.dtype, GpuDType::I8 | GpuDType::Q8_0 | GpuDType::Q4_0) {
            &be.as_f32(part)?
        } else {
            *part
        };
        let n = part.numel();
        match part.dtype {
            GpuDType::F32 if n > 0 => be.record(|enc| {
                enc.copy_buffer_to_buffer(
                    &part.buffer().buffer,
                    0,
                    &out.buffer().buffer,
                    (offset * 4) as u64,
                    (n * 4) as u64,
                )
            }),
            GpuDType::F32 => {}
            GpuDType::F16 => be.unpack_into(part, 0, &out, offset, n)?,
            GpuDType::I8 | GpuDType::Q8_0 | GpuDType::Q4_0 => {
                return Err(backend_err("concat_rows: a quantised part was not dequantised"))
            }
        }
        offset += n;
    }
    Ok(out)
}

pub fn slice_rows(be: &GpuBackend, x: &GpuTensor, start: usize, len: usize) -> Result<GpuTensor> {
    let rows = *x.shape.first().ok_or_else(|| backend_err("slice_rows: scalar tensor"))?;
    if start.checked_add(len).is_none_or(|end| end > rows) {
        return Err(backend_err(format!("slice_rows: rows {start}..{} out of range for {:?}", start + len, x.shape)));
    }
    be.check_whole(x, "slice_rows")?;
    let x = if matches!(x.dtype, GpuDType::I8 | GpuDType::Q8_0 | GpuDType::Q4_0) { &be.as_f32(x)? } else { x };
    let row: usize = x.shape[1..].iter().product();
    let mut shape = x.shape.clone();
    shape[0] = len;
    let out = be.alloc_f32(&shape, "slice_rows")?;
    let n = len * row;
    match x.dtype {
        GpuDType::F32 if n > 0 => be.record(|enc| {
            enc.copy_buffer_to_buffer(
                &x.buffer().buffer,
                (start * row * 4) as u64,
                &out.buffer().buffer,
                0,
                (n * 4) as u64,
            )
        }),
        GpuDType::F32 => {}
        GpuDType::F16 => be.unpack_into(x, start * row, &out, 0, n)?,
        GpuDType::I8 | GpuDType::Q8_0 | GpuDType::Q4_0 => {
            return Err(backend_err("slice_rows: a quantised tensor was not dequantised"))
        }
    }
    Ok(out)
}

pub fn reshape(x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
    if shape.iter().product::<usize>() != x.numel() {
        return Err(backend_err(format!("reshape: cannot view {:?} as {shape:?}", x.shape)));
    }
    // A split weight keeps its row chunks, and a block weight its blocks along rows, so only reshapes that
    // keep the first dimension are allowed (e.g. a conv weight [out, in, kh, kw] viewed as [out, in·kh·kw]).
    if (x.is_split() || x.dtype.is_blocks()) && shape.first() != x.shape.first() {
        return Err(backend_err(format!(
            "reshape: {:?} is split by rows across {} buffers; cannot view it as {shape:?}",
            x.shape,
            x.buffer_count()
        )));
    }
    Ok(GpuTensor { shape: shape.to_vec(), ..x.clone() })
}

pub fn concat_cols(be: &GpuBackend, parts: &[&GpuTensor]) -> Result<GpuTensor> {
    let first = parts.first().ok_or_else(|| backend_err("concat_cols: no tensors"))?;
    let rows = dims2(first, "concat_cols")?.0;
    let mut total = 0;
    for part in parts {
        let (r, c) = dims2(part, "concat_cols")?;
        if r != rows {
            let shapes: Vec<_> = parts.iter().map(|p| &p.shape).collect();
            return Err(backend_err(format!("concat_cols: shapes {shapes:?} have different row counts")));
        }
        total += c;
    }
    let out = be.alloc_f32(&[rows, total], "concat_cols")?;
    let mut col0 = 0;
    for part in parts {
        let part = be.as_f32(part)?;
        let cols = part.shape[1];
        let n = rows * cols;
        if n > 0 {
            let params = CopyColsParams {
                count: u32_of(n, "element count")?,
                cols: cols as u32,
                total: total as u32,
                col0: col0 as u32,
            };
            be.dispatch(Kernel::CopyCols, &params, &[part.buffer(), out.buffer()], be.groups_1d(n));
        }
        col0 += cols;
    }
    Ok(out)
}
