mod common;
use common::*;
use lambda_eclipse::ops::blocks::cosine;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::ops::WeightDType;
use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::LambdaEngine;
use lambda_eclipse::quantize::quantize_folder;
use lambda_eclipse::weights::DirFiles;

#[test]
fn q4_experiment() {
    for (i, pat) in std::env::var("PATS").unwrap().split(';').enumerate() {
        std::env::set_var("LE_Q8_KEEP", pat);
        let out = scratch("q4exp", &format!("c{i}")).join("model");
        let _ = std::fs::remove_dir_all(&out);
        let rep = quantize_folder(&tiny_model(), &out, WeightDType::Q4_0, |_| {}).unwrap();
        let bytes: u64 = rep.files.iter().map(|f| f.bytes_after).sum();
        let engine =
            pollster::block_on(LambdaEngine::load(CpuBackend::new(), &DirFiles::new(&out), &mut |_, _, _| {})).unwrap();
        let (mut text, mut image, mut prior) = (1f64, 1f64, 1f64);
        for case in cases() {
            let g = Golden::open(&case);
            let t = pollster::block_on(engine.embed_text(&case.prompt)).unwrap();
            text = text.min(cosine(&t.last_hidden_state, &g.f32("last_hidden_state").1));
            for (i, s) in case.subjects.iter().enumerate() {
                let got =
                    pollster::block_on(engine.subject_embedding(&std::fs::read(asset(&s.image)).unwrap())).unwrap();
                image = image.min(cosine(&got, &g.f32(&format!("subject{i}_image_embeds")).1));
            }
            let out =
                pollster::block_on(engine.run(&golden_request(&case, Noise::Explicit(g.f32("noise").1)))).unwrap();
            prior = prior.min(cosine(&out.image_embeds, &g.f32("image_embeds").1));
        }
        eprintln!("RESULT [{pat}] bytes {bytes}: text {text:.5} image {image:.5} prior {prior:.5}");
    }
}
