//! Multi-concept interpolation as the reference does it: bilinear blending of four final prior outputs.

use crate::error::{Error, Result};

/// Most interpolation steps accepted, by the CLI and the JS API alike: a (steps+1)² grid of embeddings
/// (4,225 of them at 64; the real model's 1280-wide embeddings then take 22 MB).
pub const MAX_STEPS: usize = 64;

fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * (1.0 - t) + y * t).collect()
}

/// The `(n+1)×(n+1)` grid of embeddings between four corners, row-major: row `i` blends `top_left →
/// bottom_left` and `top_right → bottom_right` at `t = i/n` (`v1·(1−t) + v2·t`), then column `j` blends
/// across those two at `t = j/n`. Corners of the grid are the inputs.
pub fn bilinear_grid(
    top_left: &[f32],
    top_right: &[f32],
    bottom_left: &[f32],
    bottom_right: &[f32],
    n: usize,
) -> Result<Vec<Vec<f32>>> {
    let d = top_left.len();
    if n == 0 || n > MAX_STEPS {
        return Err(Error::Input(format!("interpolation steps must be an integer from 1 to {MAX_STEPS}, not {n}")));
    }
    if d == 0 || [top_right, bottom_left, bottom_right].iter().any(|c| c.len() != d) {
        return Err(Error::Input("the four corner embeddings must be non-empty and of equal length".into()));
    }
    for (name, corner) in ["top-left", "top-right", "bottom-left", "bottom-right"].iter().zip([
        top_left,
        top_right,
        bottom_left,
        bottom_right,
    ]) {
        if corner.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(format!("the {name} corner embedding contains NaN or infinity")));
        }
    }
    let mut grid = Vec::with_capacity((n + 1) * (n + 1));
    for i in 0..=n {
        let t = i as f32 / n as f32;
        let left = lerp(top_left, bottom_left, t);
        let right = lerp(top_right, bottom_right, t);
        for j in 0..=n {
            grid.push(lerp(&left, &right, j as f32 / n as f32));
        }
    }
    // Blends of finite values can still overflow (corners near ±f32::MAX).
    super::ensure_finite("interpolation", grid.iter().flatten())?;
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_are_reproduced_and_centre_is_the_mean() {
        let (a, b, c, d) = (vec![0.0, 4.0], vec![4.0, 0.0], vec![8.0, 8.0], vec![0.0, 0.0]);
        let g = bilinear_grid(&a, &b, &c, &d, 4).unwrap();
        assert_eq!(g.len(), 25);
        assert_eq!(g[0], a);
        assert_eq!(g[4], b);
        assert_eq!(g[20], c);
        assert_eq!(g[24], d);
        assert_eq!(g[12], vec![3.0, 3.0]);
    }

    #[test]
    fn mismatched_corners_are_an_error() {
        assert!(bilinear_grid(&[1.0], &[1.0, 2.0], &[1.0], &[1.0], 2).is_err());
        assert!(bilinear_grid(&[1.0], &[1.0], &[1.0], &[1.0], 0).is_err());
    }

    #[test]
    fn steps_are_bounded_and_corners_must_be_finite() {
        assert!(bilinear_grid(&[1.0], &[1.0], &[1.0], &[1.0], MAX_STEPS).is_ok());
        let e = bilinear_grid(&[1.0], &[1.0], &[1.0], &[1.0], MAX_STEPS + 1).unwrap_err().to_string();
        assert!(e.contains("from 1 to 64"), "{e}");
        assert!(bilinear_grid(&[1.0], &[1.0], &[1.0], &[1.0], usize::MAX).is_err());
        let e = bilinear_grid(&[1.0], &[f32::NAN], &[1.0], &[1.0], 2).unwrap_err().to_string();
        assert!(e.contains("top-right"), "{e}");
    }
}
