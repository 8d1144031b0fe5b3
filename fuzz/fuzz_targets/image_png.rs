#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lambda_eclipse_fuzz::image(data, image::ImageFormat::Png));
