//! `lambda-eclipse`: the native command-line tool (batch embeddings, parity checks, benchmarks).

use clap::{Parser, Subcommand, ValueEnum};
use lambda_eclipse::error::{Error, Result};
use lambda_eclipse::ops::cpu::CpuBackend;
use lambda_eclipse::pipeline;
use lambda_eclipse::tensor_file::{to_bytes, OutTensor};
use lambda_eclipse::weights::DirFiles;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "lambda-eclipse", version, about = "λ-ECLIPSE embeddings: CLIP towers, the λ prior, decoding")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendChoice {
    /// The GPU when an adapter exists, else the CPU.
    Auto,
    Gpu,
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a prompt and run the CLIP text tower.
    EmbedText {
        /// Model folder in the Hugging Face layout (tokenizer/, text_encoder/, ...).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Output safetensors: input_ids, attention_mask, last_hidden_state, text_embeds.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
    },
    /// Preprocess images and run the CLIP vision tower.
    EmbedImage {
        #[arg(long)]
        model: PathBuf,
        /// Output safetensors: pixel_values [N,3,S,S], image_embeds [N,D].
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn cpu_backend(choice: BackendChoice) -> Result<CpuBackend> {
    match choice {
        BackendChoice::Cpu | BackendChoice::Auto => Ok(CpuBackend::new()),
        BackendChoice::Gpu => Err(Error::Input("--backend gpu: this build has no GPU backend yet".into())),
    }
}

fn no_progress() -> impl FnMut(&str, u64, u64) {
    |_: &str, _: u64, _: u64| {}
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path.display(), e))
}

fn write_tensors(path: &Path, tensors: BTreeMap<String, OutTensor>) -> Result<()> {
    std::fs::write(path, to_bytes(&tensors)?).map_err(|e| Error::io(path.display(), e))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::EmbedText { model, prompt, out, backend } => {
            let be = cpu_backend(backend)?;
            let files = DirFiles::new(&model);
            let tok = pollster::block_on(pipeline::load_tokenizer(&files))?;
            let text = pollster::block_on(pipeline::load_text_encoder(&be, &files, &mut no_progress()))?;
            let emb = pollster::block_on(pipeline::embed_text(&be, &tok, &text, &prompt))?;
            if emb.encoded.truncated {
                eprintln!("warning: the prompt is longer than {} tokens; its end was dropped", tok.max_length);
            }
            let seq = emb.encoded.input_ids.len();
            let ids = |v: &[u32]| OutTensor::I64(vec![1, seq], v.iter().map(|&x| x as i64).collect());
            let mut t = BTreeMap::new();
            t.insert("input_ids".into(), ids(&emb.encoded.input_ids));
            t.insert("attention_mask".into(), ids(&emb.encoded.attention_mask));
            t.insert("last_hidden_state".into(), OutTensor::F32(vec![1, seq, emb.hidden_size], emb.last_hidden_state));
            t.insert("text_embeds".into(), OutTensor::F32(vec![1, emb.text_embeds.len()], emb.text_embeds));
            write_tensors(&out, t)
        }
        Command::EmbedImage { model, out, backend, images } => {
            let be = cpu_backend(backend)?;
            let files = DirFiles::new(&model);
            let processor = pollster::block_on(pipeline::load_image_processor(&files))?;
            let vision = pollster::block_on(pipeline::load_image_encoder(&be, &files, &mut no_progress()))?;
            pipeline::check_processor_fits(&processor, vision.config.image_size)?;
            let (mut pixels, mut embeds) = (Vec::new(), Vec::new());
            for path in &images {
                let bytes = read_file(path)?;
                let pv = pipeline::pixel_values_from_bytes(&bytes, &processor)
                    .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
                embeds.extend(pollster::block_on(pipeline::embed_pixels(&be, &vision, &pv))?);
                pixels.extend(pv);
            }
            let (n, s, d) = (images.len(), vision.config.image_size, vision.config.projection_dim);
            let mut t = BTreeMap::new();
            t.insert("pixel_values".into(), OutTensor::F32(vec![n, vision.config.num_channels, s, s], pixels));
            t.insert("image_embeds".into(), OutTensor::F32(vec![n, d], embeds));
            write_tensors(&out, t)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
