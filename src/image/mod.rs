//! Images: decoding with Pillow's RGB conversion, Pillow-exact bicubic resize, CLIP preprocessing, and
//! OpenCV-exact Canny edges for edge control.

pub mod canny;
pub mod decode;
pub mod jpeg;
pub mod limits;
mod precheck;
pub mod preprocess;
pub mod resize;
