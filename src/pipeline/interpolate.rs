//! Multi-concept interpolation as the reference does it: bilinear blending of four final prior outputs.

use crate::error::{Error, Result};

fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * (1.0 - t) + y * t).collect()
}

/// The `(n+1)×(n+1)` grid of embeddings between four corners, row-major: row `i` blends `top_left →
/// bottom_left` and `top_right → bottom_right` at `t = i/n` (`v1·(1−t) + v2·t`), then column `j` blends
/// across those two at `t = j/n`. Corners of the grid are the inputs.
pub fn bilinear_grid(top_left: &[f32], top_right: &[f32], bottom_left: &[f32], bottom_right: &[f32], n: usize)
    -> Result<Vec<Vec<f32>>> {
    let d = top_left.len();
    if n == 0 {
        return Err(Error::Input("interpolation needs at least 1 step (n ≥ 1)".into()));
    }
    if d == 0 || [top_right, bottom_left, bottom_right].iter().any(|c| c.len() != d) {
        return Err(Error::Input("the four corner embeddings must be non-empty and of equal length".into()));
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
}
