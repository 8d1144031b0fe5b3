//! The whole λ pipeline (subjects, edge control, prior) reproduces every case of `shared/goldens/lambda-tiny`
//! end to end from the photos and the golden noise; seeds, caching and bad inputs behave.

mod common;
use common::*;
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline::lambda::Noise;
use lambda_eclipse::pipeline::{LambdaEngine, PriorRequest, Subject, Warning};
use lambda_eclipse::weights::DirFiles;

fn engine() -> LambdaEngine<CpuBackend> {
    pollster::block_on(LambdaEngine::load(CpuBackend::new(), &DirFiles::new(tiny_model()), &mut |_, _, _| {})).unwrap()
}

#[test]
fn every_golden_case_is_reproduced_end_to_end() {
    let engine = engine();
    let mut saw_canny = false;
    for case in cases() {
        let g = Golden::open(&case);
        let out = pollster::block_on(engine.run(&golden_request(&case, Noise::Explicit(g.f32("noise").1)))).unwrap();
        let n = &case.name;
        assert_close(
            &format!("{n}: encoder_hidden_states"),
            &out.encoder_hidden_states,
            &g.f32("encoder_hidden_states").1,
            1e-4,
        );
        assert_close(&format!("{n}: image_embeds"), &out.image_embeds, &g.f32("image_embeds").1, 1e-4);
        assert_close(
            &format!("{n}: negative_image_embeds"),
            &out.negative_image_embeds,
            &g.f32("negative_image_embeds").1,
            1e-4,
        );
        assert_close(
            &format!("{n}: control_embeds"),
            &out.control_embeds,
            &g.f32(if case.canny.is_some() { "control_embeds" } else { "zero_image_embeds" }).1,
            1e-4,
        );
        if case.canny.is_some() {
            saw_canny = true;
            let (shape, want) = g.f32("canny_edges");
            let (w, h, edges) = out.canny_edges.clone().expect("edges for a control image");
            assert_eq!(vec![h as usize, w as usize], shape, "{n}: canny_edges shape");
            let want: Vec<u8> = want.iter().map(|&v| v as u8).collect();
            let differing = edges.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{n}: canny_edges differ in {differing} pixels");
        } else {
            assert!(out.canny_edges.is_none());
        }
        let missing: Vec<&Warning> =
            out.warnings.iter().filter(|w| matches!(w, Warning::KeywordNotFound { .. })).collect();
        if n == "repeat_missing" {
            assert_eq!(missing, vec![&Warning::KeywordNotFound { subject: 1, keyword: "unicorn".into() }]);
        } else {
            assert!(missing.is_empty(), "{n}: unexpected {missing:?}");
        }
    }
    assert!(saw_canny, "the golden set has an edge-control case");
}

#[test]
fn same_seed_gives_bit_identical_noise_and_output_and_different_seeds_differ() {
    let engine = engine();
    let case = &cases()[0];
    let a = pollster::block_on(engine.run(&golden_request(case, Noise::Seed(7)))).unwrap();
    let b = pollster::block_on(engine.run(&golden_request(case, Noise::Seed(7)))).unwrap();
    let c = pollster::block_on(engine.run(&golden_request(case, Noise::Seed(8)))).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.noise), bits(&b.noise));
    assert_eq!(bits(&a.image_embeds), bits(&b.image_embeds));
    assert_ne!(bits(&a.noise), bits(&c.noise));
    assert_ne!(bits(&a.image_embeds), bits(&c.image_embeds));
}

#[test]
fn changing_only_the_prompt_reuses_cached_subject_embeddings() {
    let engine = engine();
    let case = &cases()[0];
    pollster::block_on(engine.run(&golden_request(case, Noise::Seed(1)))).unwrap();
    let cached = engine.cached_subjects();
    assert_eq!(cached, case.subjects.len());
    let mut req = golden_request(case, Noise::Seed(1));
    req.prompt = "a cat wearing glasses in the rain".into();
    let out = pollster::block_on(engine.run(&req)).unwrap();
    assert_eq!(engine.cached_subjects(), cached, "no new photo was encoded");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn over_long_and_empty_prompts_warn_but_work() {
    let engine = engine();
    let long = pollster::block_on(engine.run(&PriorRequest::new("a cat ".repeat(60), Noise::Seed(1)))).unwrap();
    assert!(long.warnings.contains(&Warning::PromptTruncated { max_tokens: 77 }));
    assert_eq!(long.input_ids.len(), 77);
    let empty = pollster::block_on(engine.run(&PriorRequest::new("", Noise::Seed(1)))).unwrap();
    assert!(empty.warnings.contains(&Warning::EmptyPrompt));
    assert!(empty.image_embeds.iter().all(|x| x.is_finite()));
}

#[test]
fn keyword_without_tokens_is_a_clear_error() {
    let engine = engine();
    let mut req = PriorRequest::new("a cat", Noise::Seed(1));
    req.subjects.push(Subject { keyword: "   ".into(), image: std::fs::read(asset("chelsea.png")).unwrap() });
    let err = pollster::block_on(engine.run(&req)).unwrap_err().to_string();
    assert!(err.contains("subject 1") && err.contains("no tokens"), "{err}");
}

#[test]
fn duplicate_keywords_warn_that_the_later_subject_wins() {
    let engine = engine();
    let mut req = PriorRequest::new("a cat next to a cat", Noise::Seed(1));
    for img in ["chelsea.png", "coffee.png"] {
        req.subjects.push(Subject { keyword: "cat".into(), image: std::fs::read(asset(img)).unwrap() });
    }
    let out = pollster::block_on(engine.run(&req)).unwrap();
    assert!(
        out.warnings.contains(&Warning::SubjectOverwritten { earlier: 0, later: 1, keyword: "cat".into() }),
        "{:?}",
        out.warnings
    );
}

#[test]
fn unreadable_subject_image_names_the_subject() {
    let engine = engine();
    let mut req = PriorRequest::new("a cat", Noise::Seed(1));
    req.subjects.push(Subject { keyword: "cat".into(), image: b"not an image at all".to_vec() });
    let err = pollster::block_on(engine.run(&req)).unwrap_err().to_string();
    assert!(err.contains("subject 1 (\"cat\")"), "{err}");
}

#[test]
fn one_pixel_control_image_works() {
    let engine = engine();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut req = PriorRequest::new("a cat", Noise::Seed(1));
    req.control = Some(png);
    let out = pollster::block_on(engine.run(&req)).unwrap();
    assert_eq!(out.canny_edges.as_ref().map(|e| (e.0, e.1)), Some((1, 1)));
    assert!(out.image_embeds.iter().all(|x| x.is_finite()));
}

#[test]
fn wrong_noise_length_is_a_clear_error() {
    let engine = engine();
    let err = pollster::block_on(engine.run(&PriorRequest::new("a cat", Noise::Explicit(vec![0.0; 3])))).unwrap_err();
    assert!(err.to_string().contains("noise has 3 values"), "{err}");
}

#[test]
fn keyword_matches_agree_with_the_pipeline_warnings_on_every_golden_case() {
    let engine = engine();
    for case in cases() {
        let keywords: Vec<String> = case.subjects.iter().map(|s| s.keyword.clone()).collect();
        let matches = engine.keyword_matches(&case.prompt, &keywords).unwrap();
        let out = pollster::block_on(engine.run(&golden_request(&case, Noise::Seed(1)))).unwrap();
        for (j, m) in matches.iter().enumerate() {
            let warned = out.warnings.contains(&Warning::KeywordNotFound { subject: j, keyword: keywords[j].clone() });
            assert_eq!(m.found, !warned, "{}: subject {} ({})", case.name, j + 1, keywords[j]);
            let chars: Vec<char> = case.prompt.chars().collect();
            for &(s, e) in &m.spans {
                let word: String = chars[s..e].iter().collect();
                assert_eq!(word.to_lowercase(), keywords[j].to_lowercase(), "{}: span {s}..{e}", case.name);
            }
        }
    }
}

#[test]
fn keyword_spans_cover_every_occurrence_and_multi_token_keywords_in_character_units() {
    let engine = engine();
    // "é" is one character but two UTF-8 bytes: spans count characters.
    let prompt = "Café: a Dog, a dog and sun glasses";
    let m =
        engine.keyword_matches(prompt, &["dog".into(), "sun glasses".into(), "unicorn".into(), " ".into()]).unwrap();
    let text = |(s, e): (usize, usize)| prompt.chars().skip(s).take(e - s).collect::<String>();
    assert!(m[0].found);
    assert_eq!(m[0].spans.iter().map(|&r| text(r)).collect::<Vec<_>>(), ["Dog", "dog"]);
    assert!(m[1].found);
    assert_eq!(m[1].spans.iter().map(|&r| text(r)).collect::<Vec<_>>(), ["sun", "glasses"]);
    assert!(!m[2].found && m[2].spans.is_empty() && !m[2].empty);
    assert!(m[3].empty && !m[3].found);
}

#[test]
fn oversized_control_image_is_refused_before_decoding() {
    let engine = engine();
    // A valid PNG header claiming 12000×12000 gray pixels (the data is never read).
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&12000u32.to_be_bytes());
    ihdr.extend_from_slice(&12000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    let mut crc = 0xffff_ffffu32;
    for &b in &ihdr {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    png.extend_from_slice(&(!crc).to_be_bytes());
    let mut req = PriorRequest::new("a cat", Noise::Seed(1));
    req.control = Some(png);
    let err = pollster::block_on(engine.run(&req)).unwrap_err().to_string();
    assert!(err.contains("control image") && err.contains("12000×12000"), "{err}");
}
