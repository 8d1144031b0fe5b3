//! The CLIP towers, tokenizer and preprocessing reproduce every case of `shared/goldens/lambda-tiny`.

mod common;
use common::*;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline;
use lambda_eclipse::weights::DirFiles;

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    pollster::block_on(f)
}

#[test]
fn text_tower_matches_golden_ids_hidden_states_and_text_embeds() {
    let be = CpuBackend::new();
    let files = DirFiles::new(tiny_model());
    let tok = block(pipeline::load_tokenizer(&files)).unwrap();
    let model = block(pipeline::load_text_encoder(&be, &files, &mut |_, _, _| {})).unwrap();
    for case in cases() {
        let g = Golden::open(&case);
        let emb = block(pipeline::embed_text(&be, &tok, &model, &case.prompt)).unwrap();
        let ids: Vec<i64> = emb.encoded.input_ids.iter().map(|&x| x as i64).collect();
        assert_eq!(ids, g.i64("input_ids"), "{}: input_ids", case.name);
        let mask: Vec<i64> = emb.encoded.attention_mask.iter().map(|&x| x as i64).collect();
        assert_eq!(mask, g.i64("attention_mask"), "{}: attention_mask", case.name);
        assert_close(
            &format!("{}: last_hidden_state", case.name),
            &emb.last_hidden_state,
            &g.f32("last_hidden_state").1,
            1e-4,
        );
        assert_close(&format!("{}: text_embeds", case.name), &emb.text_embeds, &g.f32("text_embeds").1, 1e-4);
    }
}

#[test]
fn vision_tower_matches_golden_pixel_values_subject_and_zero_embeds() {
    let be = CpuBackend::new();
    let files = DirFiles::new(tiny_model());
    let processor = block(pipeline::load_image_processor(&files)).unwrap();
    let model = block(pipeline::load_image_encoder(&be, &files, &mut |_, _, _| {})).unwrap();
    let zero = block(pipeline::zero_image_embeds(&be, &model)).unwrap();
    let mut checked = 0;
    for case in cases() {
        let g = Golden::open(&case);
        assert_close(&format!("{}: zero_image_embeds", case.name), &zero, &g.f32("zero_image_embeds").1, 1e-4);
        for (j, subject) in case.subjects.iter().enumerate() {
            let bytes = std::fs::read(asset(&subject.image)).unwrap();
            let pv = pipeline::pixel_values_from_bytes(&bytes, &processor).unwrap();
            assert_close(
                &format!("{}: subject{j}_pixel_values", case.name),
                &pv,
                &g.f32(&format!("subject{j}_pixel_values")).1,
                1e-6,
            );
            let e = block(pipeline::embed_pixels(&be, &model, &pv)).unwrap();
            assert_close(
                &format!("{}: subject{j}_image_embeds", case.name),
                &e,
                &g.f32(&format!("subject{j}_image_embeds")).1,
                1e-4,
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "every golden subject was checked");
}

/// Reads a little-endian f32 `.npy` file (version 1.0 header), returning (shape, values).
fn read_npy_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not a .npy file");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape_text.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let values = bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, values)
}

#[test]
fn franz_kafka_jpeg_preprocessing_matches_the_independent_golden() {
    let files = DirFiles::new(tiny_model());
    let processor = block(pipeline::load_image_processor(&files)).unwrap();
    let (shape, want) = read_npy_f32(&asset("expected_preprocessed_image.npy"));
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let pv = pipeline::pixel_values_from_bytes(&std::fs::read(asset("franz-kafka.jpg")).unwrap(), &processor).unwrap();
    assert_close("franz-kafka.jpg pixel_values", &pv, &want, 1e-6);
}
