//! The decoder's samplers, as diffusers 0.42.1 computes them: `DDPMScheduler`, `DDIMScheduler` (η = 0) and
//! `DPMSolverMultistepScheduler` (DPM-Solver++ of order 2 by default). All are built from one
//! `scheduler_config.json` like diffusers' `from_config`: keys the file has win, the others take the chosen
//! class's defaults — so DDIM and DPM-Solver++ run on the betas (and spacing) of the decoder's DDPM config.
//!
//! Arithmetic follows PyTorch in float32 op by op (0-dim tensors are f32 scalars; each tensor op rounds),
//! including `torch.linspace` (fused multiply-add, as its CPU kernel is compiled) and `torch.cumprod`
//! (accumulated in f64), so the schedule is bit-identical to diffusers'. Timestep lists follow numpy (f64,
//! round half to even). Options diffusers has but this code does not compute are refused by field name.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// Which sampler to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `DDPMScheduler`: ancestral sampling, fresh noise at every step.
    Ddpm,
    /// `DDIMScheduler` with η = 0: deterministic.
    Ddim,
    /// `DPMSolverMultistepScheduler` (DPM-Solver++): deterministic, good in 20–25 steps.
    DpmSolverPP,
}

impl SchedulerKind {
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::DpmSolverPP => "dpmpp",
        }
    }

    /// The kind a diffusers class name stands for.
    pub fn from_class_name(class: &str) -> Option<Self> {
        match class {
            "DDPMScheduler" => Some(SchedulerKind::Ddpm),
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::DpmSolverPP),
            _ => None,
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(SchedulerKind::Ddpm),
            "ddim" => Ok(SchedulerKind::Ddim),
            "dpmpp" | "dpm++" | "dpmsolver++" | "dpm-solver++" => Ok(SchedulerKind::DpmSolverPP),
            _ => Err(Error::Input(format!("unknown scheduler \"{s}\" (expected ddpm, ddim or dpmpp)"))),
        }
    }
}

/// Most training timesteps a config may give (the schedule is a table of this many f32; diffusers' models
/// use 1000, some 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The keys of a diffusers `scheduler_config.json` (any of the three classes). Absent keys are `None` and take
/// the default of the class that is built. Float keys may hold Python's `NaN`/`Infinity` literals (read as
/// such, then refused by [`Scheduler::new`] by field name where they make no sense).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    #[serde(default, deserialize_with = "py_float")]
    pub beta_start: Option<f64>,
    #[serde(default, deserialize_with = "py_float")]
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    #[serde(default, deserialize_with = "py_floats")]
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<String>,
    pub variance_type: Option<String>,
    pub clip_sample: Option<bool>,
    #[serde(default, deserialize_with = "py_float")]
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<i64>,
    pub set_alpha_to_one: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub algorithm_type: Option<String>,
    pub solver_order: Option<usize>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    pub final_sigmas_type: Option<String>,
    /// `-Infinity` in the file (not JSON: what diffusers writes) is read as `None`, i.e. −∞.
    #[serde(default, deserialize_with = "py_float")]
    pub lambda_min_clipped: Option<f64>,
}

/// A float as Python's `json` writes it: a number, or `NaN`/`Infinity`/`-Infinity` (turned into strings by
/// [`quote_python_literals`] before parsing).
#[derive(Deserialize)]
#[serde(untagged)]
enum PyFloat {
    Number(f64),
    Literal(String),
}

impl PyFloat {
    fn value<E: serde::de::Error>(self) -> std::result::Result<f64, E> {
        match self {
            PyFloat::Number(v) => Ok(v),
            PyFloat::Literal(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(E::custom(format!("expected a number, got the string {s:?}"))),
            },
        }
    }
}

fn py_float<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    Option::<PyFloat>::deserialize(d)?.map(PyFloat::value).transpose()
}

fn py_floats<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<f64>>, D::Error> {
    Option::<Vec<PyFloat>>::deserialize(d)?.map(|v| v.into_iter().map(PyFloat::value).collect()).transpose()
}

/// JSON text with Python's bare `NaN`, `Infinity` and `-Infinity` literals (outside strings) quoted, so a
/// JSON parser reads them as strings.
fn quote_python_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(lit) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|l| rest.starts_with(l)) {
            out.push('"');
            out.push_str(lit);
            out.push('"');
            rest = &rest[lit.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` (Python's `-Infinity`/`Infinity`/`NaN` literals are read as floats).
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let mut cfg: SchedulerConfig = serde_json::from_str(&quote_python_literals(text))
            .map_err(|e| Error::config(path, format!("invalid scheduler config: {e}")))?;
        if cfg.lambda_min_clipped == Some(f64::NEG_INFINITY) {
            cfg.lambda_min_clipped = None;
        }
        Ok(cfg)
    }

    /// The sampler the config's `_class_name` names.
    pub fn default_kind(&self, path: &str) -> Result<SchedulerKind> {
        let class = self.class_name.as_deref().unwrap_or("");
        SchedulerKind::from_class_name(class).ok_or_else(|| {
            Error::config(path, format!("`_class_name` {class:?} is not a supported scheduler (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler)"))
        })
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` as its CPU kernel computes it: `step = (end − start)/(steps − 1)`
/// in f32, then `start + step·i` for the first half and `end − step·(steps − 1 − i)` for the rest, each a fused
/// multiply-add.
pub fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - 1 - i) as f32, end) })
        .collect()
}

/// `np.linspace(start, stop, num)` (f64; the last value is `stop` exactly).
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// `np.arange(start, stop, step)` for a negative float step.
fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * step).collect()
}

fn round_i64(x: f64) -> i64 {
    x.round_ties_even() as i64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

// The variants are diffusers' `variance_type` values (`fixed_small`, ...), kept recognisable.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variance {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// A sampler with its schedule and (for DPM-Solver++) the model outputs it remembers between steps.
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    num_train_timesteps: usize,
    alphas_cumprod: Vec<f32>,
    spacing: Spacing,
    steps_offset: i64,
    clip_sample: Option<f32>,
    variance: Variance,
    final_alpha_cumprod: f32,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    timesteps: Vec<i64>,
    /// DPM-Solver++: σ per step plus the final σ.
    sigmas: Vec<f32>,
    step_index: usize,
    lower_order_nums: usize,
    previous_x0: Option<Vec<f32>>,
}

impl Scheduler {
    /// Builds `kind` from a config (diffusers' `from_config`: the config's keys, else `kind`'s defaults).
    pub fn new(kind: SchedulerKind, cfg: &SchedulerConfig, path: &str) -> Result<Self> {
        let bad = |field: &str, what: String| {
            Err(Error::config(path, format!("unsupported scheduler config: `{field}` {what}")))
        };
        // Values that make no schedule at all (diffusers would compute NaN from them, or run out of memory).
        let invalid =
            |field: &str, what: String| Err(Error::config(path, format!("invalid scheduler config: `{field}` {what}")));
        let n = cfg.num_train_timesteps.unwrap_or(1000);
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return invalid("num_train_timesteps", format!("{n} (must be from 2 to {MAX_TRAIN_TIMESTEPS})"));
        }
        let (start, end) = (cfg.beta_start.unwrap_or(0.0001), cfg.beta_end.unwrap_or(0.02));
        let is_beta = |b: f64| b > 0.0 && b < 1.0;
        if cfg.trained_betas.is_none() {
            // DDPM's betas are probabilities, and the linear schedules rise from beta_start to beta_end.
            for (field, v) in [("beta_start", start), ("beta_end", end)] {
                if !is_beta(v) {
                    return invalid(field, format!("{v} (must be between 0 and 1, exclusive)"));
                }
            }
            if start > end {
                return invalid(
                    "beta_start",
                    format!("{start} is above `beta_end` {end} (the noise schedule must not decrease)"),
                );
            }
        }
        let betas: Vec<f32> = match (&cfg.trained_betas, cfg.beta_schedule.as_deref().unwrap_or("linear")) {
            (Some(b), _) if b.len() == n => {
                if let Some((i, v)) = b.iter().enumerate().find(|(_, &v)| !is_beta(v)) {
                    return invalid(
                        "trained_betas",
                        format!("value {i} is {v} (each must be between 0 and 1, exclusive)"),
                    );
                }
                b.iter().map(|&x| x as f32).collect()
            }
            (Some(b), _) => return invalid("trained_betas", format!("has {} values for {n} training steps", b.len())),
            (None, "linear") => torch_linspace_f32(start as f32, end as f32, n),
            (None, "scaled_linear") => {
                torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n).into_iter().map(|b| b * b).collect()
            }
            (None, other) => return bad("beta_schedule", format!("{other:?} (supported: linear, scaled_linear)")),
        };
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, &b)| !(b > 0.0 && b < 1.0)) {
            return invalid(
                "beta_end",
                format!("gives β = {b} at timestep {i} in float32 (each β must be between 0 and 1)"),
            );
        }
        // torch.cumprod on the CPU accumulates float32 in double and rounds each output.
        let mut acc = 1f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|&b| {
                acc *= (1.0f32 - b) as f64;
                acc as f32
            })
            .collect();
        // ᾱ = 0 divides by zero in every sampler (x̂₀ = (x − √(1−ᾱ)·ε)/√ᾱ).
        if let Some(t) = alphas_cumprod.iter().position(|&a| a <= 0.0) {
            return invalid(
                "beta_end",
                format!("with {n} training steps makes ᾱ underflow to 0 at timestep {t} (the betas are too large for so many steps)"),
            );
        }
        let steps_offset = cfg.steps_offset.unwrap_or(0);
        if !(0..n as i64).contains(&steps_offset) {
            return invalid("steps_offset", format!("{steps_offset} (must be from 0 to num_train_timesteps − 1)"));
        }
        let clip_range = cfg.clip_sample_range.unwrap_or(1.0);
        if cfg.clip_sample.unwrap_or(true) && !(clip_range.is_finite() && clip_range > 0.0) {
            return invalid("clip_sample_range", format!("{clip_range} (must be a positive number)"));
        }
        if let Some(p) = cfg.prediction_type.as_deref().filter(|p| *p != "epsilon") {
            return bad("prediction_type", format!("{p:?} (supported: epsilon)"));
        }
        let flags = [
            ("thresholding", cfg.thresholding),
            ("rescale_betas_zero_snr", cfg.rescale_betas_zero_snr),
            ("use_karras_sigmas", cfg.use_karras_sigmas),
            ("use_exponential_sigmas", cfg.use_exponential_sigmas),
            ("use_beta_sigmas", cfg.use_beta_sigmas),
            ("use_lu_lambdas", cfg.use_lu_lambdas),
            ("use_flow_sigmas", cfg.use_flow_sigmas),
            ("use_dynamic_shifting", cfg.use_dynamic_shifting),
        ];
        if let Some((field, _)) = flags.iter().find(|(_, v)| *v == Some(true)) {
            return bad(field, "is true (supported: false)".into());
        }
        let default_spacing = if kind == SchedulerKind::DpmSolverPP { "linspace" } else { "leading" };
        let spacing = match cfg.timestep_spacing.as_deref().unwrap_or(default_spacing) {
            "linspace" => Spacing::Linspace,
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            other => return bad("timestep_spacing", format!("{other:?} (supported: linspace, leading, trailing)")),
        };
        let clip = cfg.clip_sample.unwrap_or(true).then_some(clip_range as f32);
        let mut s = Scheduler {
            kind,
            num_train_timesteps: n,
            final_alpha_cumprod: if cfg.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] },
            alphas_cumprod,
            spacing,
            steps_offset,
            clip_sample: if kind == SchedulerKind::DpmSolverPP { None } else { clip },
            variance: Variance::FixedSmall,
            solver_order: 2,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigma_zero: true,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
            lower_order_nums: 0,
            previous_x0: None,
        };
        match kind {
            SchedulerKind::Ddpm => {
                s.variance = match cfg.variance_type.as_deref().unwrap_or("fixed_small") {
                    "fixed_small" => Variance::FixedSmall,
                    "fixed_small_log" => Variance::FixedSmallLog,
                    "fixed_large" => Variance::FixedLarge,
                    other => {
                        return bad(
                            "variance_type",
                            format!("{other:?} (supported: fixed_small, fixed_small_log, fixed_large)"),
                        )
                    }
                };
            }
            SchedulerKind::Ddim => {}
            SchedulerKind::DpmSolverPP => {
                if let Some(a) = cfg.algorithm_type.as_deref().filter(|a| *a != "dpmsolver++") {
                    return bad("algorithm_type", format!("{a:?} (supported: dpmsolver++)"));
                }
                if let Some(v) = cfg.variance_type.as_deref().filter(|v| *v == "learned" || *v == "learned_range") {
                    return bad("variance_type", format!("{v:?} (DPM-Solver++ here takes ε only)"));
                }
                s.solver_order = match cfg.solver_order.unwrap_or(2) {
                    o @ (1 | 2) => o,
                    o => return bad("solver_order", format!("{o} (supported: 1, 2)")),
                };
                s.solver_type = match cfg.solver_type.as_deref().unwrap_or("midpoint") {
                    // diffusers maps the DEIS/UniPC names onto midpoint.
                    "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
                    "heun" => SolverType::Heun,
                    other => return bad("solver_type", format!("{other:?} (supported: midpoint, heun)")),
                };
                s.lower_order_final = cfg.lower_order_final.unwrap_or(true);
                s.euler_at_final = cfg.euler_at_final.unwrap_or(false);
                s.final_sigma_zero = match cfg.final_sigmas_type.as_deref().unwrap_or("zero") {
                    "zero" => true,
                    "sigma_min" => false,
                    other => return bad("final_sigmas_type", format!("{other:?} (supported: zero, sigma_min)")),
                };
                if let Some(l) = cfg.lambda_min_clipped.filter(|&l| l != f64::NEG_INFINITY) {
                    return bad("lambda_min_clipped", format!("{l} (supported: -inf)"));
                }
            }
        }
        Ok(s)
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// `init_noise_sigma`: 1 for all three.
    pub fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// The training schedule ᾱ_t (f32, bit-identical to diffusers').
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Timesteps of the current schedule, in order of use.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// DPM-Solver++'s σ schedule (one per step plus the final σ); empty for the others.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Whether [`Scheduler::step`] needs a fresh N(0, 1) sample at this step (DDPM at t > 0).
    pub fn needs_noise(&self) -> bool {
        self.kind == SchedulerKind::Ddpm && self.timesteps.get(self.step_index).is_some_and(|&t| t > 0)
    }

    /// Index of the next step.
    pub fn step_index(&self) -> usize {
        self.step_index
    }

    /// `set_timesteps(steps)`: the schedule for `steps` denoising steps; resets the solver state.
    pub fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        let n = self.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(Error::Input(format!(
                "steps must be between 1 and {n} (the scheduler's training steps), got {steps}"
            )));
        }
        let nf = n as f64;
        let ts: Vec<i64> = match self.kind {
            SchedulerKind::Ddpm | SchedulerKind::Ddim => match self.spacing {
                Spacing::Linspace => np_linspace(0.0, nf - 1.0, steps).iter().rev().map(|&x| round_i64(x)).collect(),
                Spacing::Leading => {
                    let ratio = (n / steps) as i64;
                    (0..steps as i64).rev().map(|i| i * ratio + self.steps_offset).collect()
                }
                Spacing::Trailing => {
                    np_arange_down(nf, 0.0, -(nf / steps as f64)).iter().map(|&x| round_i64(x) - 1).collect()
                }
            },
            SchedulerKind::DpmSolverPP => {
                // lambda_min_clipped = −∞: the last usable timestep is num_train_timesteps.
                let last = n;
                match self.spacing {
                    Spacing::Linspace => {
                        let v = np_linspace(0.0, last as f64 - 1.0, steps + 1);
                        v.iter().rev().take(steps).map(|&x| round_i64(x)).collect()
                    }
                    Spacing::Leading => {
                        let ratio = (last / (steps + 1)) as i64;
                        (1..=steps as i64).rev().map(|i| i * ratio + self.steps_offset).collect()
                    }
                    Spacing::Trailing => np_arange_down(last as f64, 0.0, -(nf / steps as f64))
                        .iter()
                        .map(|&x| round_i64(x) - 1)
                        .collect(),
                }
            }
        };
        if let Some(bad) = ts.iter().find(|&&t| t < 0 || (t as usize >= n && self.kind != SchedulerKind::DpmSolverPP)) {
            return Err(Error::Input(format!(
                "{steps} steps with this scheduler config give timestep {bad}, outside 0..{n}"
            )));
        }
        if self.kind == SchedulerKind::DpmSolverPP {
            // σ_t = √((1 − ᾱ)/ᾱ) in f32, read at each timestep (np.interp, which clamps at the ends).
            let full: Vec<f32> = self.alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
            let mut sigmas: Vec<f32> = ts.iter().map(|&t| full[(t.max(0) as usize).min(n - 1)]).collect();
            let a0 = self.alphas_cumprod[0];
            sigmas.push(if self.final_sigma_zero { 0.0 } else { ((1.0 - a0) / a0).sqrt() });
            self.sigmas = sigmas;
        }
        self.timesteps = ts;
        self.step_index = 0;
        self.lower_order_nums = 0;
        self.previous_x0 = None;
        Ok(())
    }

    fn alpha_prod(&self, t: i64) -> f32 {
        self.alphas_cumprod[t as usize]
    }

    /// One denoising step at the current timestep: `model_output` is ε (the guided first channels), `sample` the
    /// latents; DDPM also takes the step's N(0, 1) `noise` when [`Scheduler::needs_noise`]. Returns the new latents.
    pub fn step(&mut self, model_output: &[f32], sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let i = self.step_index;
        let Some(&t) = self.timesteps.get(i) else {
            return Err(Error::Input(format!("scheduler: step {} of a {}-step schedule", i + 1, self.timesteps.len())));
        };
        if model_output.len() != sample.len() {
            return Err(Error::Input(format!(
                "scheduler: model output has {} values, the sample {}",
                model_output.len(),
                sample.len()
            )));
        }
        let out = match self.kind {
            SchedulerKind::Ddpm => self.ddpm_step(t, model_output, sample, noise)?,
            SchedulerKind::Ddim => self.ddim_step(t, model_output, sample),
            SchedulerKind::DpmSolverPP => self.dpm_step(model_output, sample),
        };
        self.step_index += 1;
        Ok(out)
    }

    fn clip(&self, x0: &mut [f32]) {
        if let Some(r) = self.clip_sample {
            for v in x0 {
                *v = v.clamp(-r, r);
            }
        }
    }

    /// x̂₀ = (x − √(1 − ᾱ_t)·ε) / √ᾱ_t, op by op.
    fn x0_from_eps(alpha_prod_t: f32, eps: &[f32], sample: &[f32]) -> Vec<f32> {
        let (b, a) = ((1.0 - alpha_prod_t).sqrt(), alpha_prod_t.sqrt());
        sample.iter().zip(eps).map(|(&x, &e)| (x - b * e) / a).collect()
    }

    fn ddpm_step(&self, t: i64, eps: &[f32], sample: &[f32], noise: Option<&[f32]>) -> Result<Vec<f32>> {
        let prev_t = self.timesteps.get(self.step_index + 1).copied().unwrap_or(-1);
        let alpha_prod_t = self.alpha_prod(t);
        let alpha_prod_t_prev = if prev_t >= 0 { self.alpha_prod(prev_t) } else { 1.0 };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let mut x0 = Self::x0_from_eps(alpha_prod_t, eps, sample);
        self.clip(&mut x0);
        let c0 = (alpha_prod_t_prev.sqrt() * current_beta_t) / beta_prod_t;
        let c1 = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mut prev: Vec<f32> = x0.iter().zip(sample).map(|(&p, &x)| c0 * p + c1 * x).collect();
        if t > 0 {
            let noise = noise.ok_or_else(|| Error::Input("DDPM: this step needs noise".into()))?;
            if noise.len() != sample.len() {
                return Err(Error::Input(format!(
                    "DDPM: step noise has {} values, the sample {}",
                    noise.len(),
                    sample.len()
                )));
            }
            // _get_variance: (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t, clamped at 1e-20.
            let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
            let std = match self.variance {
                Variance::FixedSmall => variance.sqrt(),
                Variance::FixedSmallLog => (0.5 * variance.ln()).exp(),
                Variance::FixedLarge => current_beta_t.sqrt(),
            };
            for (p, &z) in prev.iter_mut().zip(noise) {
                *p += std * z;
            }
        }
        Ok(prev)
    }

    fn ddim_step(&self, t: i64, eps: &[f32], sample: &[f32]) -> Vec<f32> {
        let prev_t = t - (self.num_train_timesteps / self.timesteps.len()) as i64;
        let alpha_prod_t = self.alpha_prod(t);
        let alpha_prod_t_prev = if prev_t >= 0 { self.alpha_prod(prev_t) } else { self.final_alpha_cumprod };
        let mut x0 = Self::x0_from_eps(alpha_prod_t, eps, sample);
        self.clip(&mut x0);
        // η = 0: σ_t = 0, direction √(1 − ᾱ_prev − 0)·ε.
        let dir = ((1.0 - alpha_prod_t_prev) - 0.0f32).sqrt();
        let a = alpha_prod_t_prev.sqrt();
        x0.iter().zip(eps).map(|(&p, &e)| a * p + dir * e).collect()
    }

    fn alpha_sigma(sigma: f32) -> (f32, f32) {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        (alpha, sigma * alpha)
    }

    fn dpm_step(&mut self, eps: &[f32], sample: &[f32]) -> Vec<f32> {
        let i = self.step_index;
        let len = self.timesteps.len();
        let lower_order_final =
            i == len - 1 && (self.euler_at_final || (self.lower_order_final && len < 15) || self.final_sigma_zero);
        let lower_order_second = i + 2 == len && self.lower_order_final && len < 15;
        // convert_model_output: the data prediction x̂₀ = (x − σ_t ε)/α_t.
        let (alpha_s0, sigma_s0) = Self::alpha_sigma(self.sigmas[i]);
        let x0: Vec<f32> = sample.iter().zip(eps).map(|(&x, &e)| (x - sigma_s0 * e) / alpha_s0).collect();
        let (alpha_t, sigma_t) = Self::alpha_sigma(self.sigmas[i + 1]);
        let lambda = |a: f32, s: f32| a.ln() - s.ln();
        let (lambda_t, lambda_s0) = (lambda(alpha_t, sigma_t), lambda(alpha_s0, sigma_s0));
        let h = lambda_t - lambda_s0;
        let c_sample = sigma_t / sigma_s0;
        let c_d0 = alpha_t * ((-h).exp() - 1.0);
        let first_order = self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final;
        let out = match (&self.previous_x0, first_order) {
            (Some(m1), false) if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second => {
                let (alpha_s1, sigma_s1) = Self::alpha_sigma(self.sigmas[i - 1]);
                let h_0 = lambda_s0 - lambda(alpha_s1, sigma_s1);
                let r0 = h_0 / h;
                let inv_r0 = 1.0 / r0;
                let d1: Vec<f32> = x0.iter().zip(m1).map(|(&a, &b)| inv_r0 * (a - b)).collect();
                match self.solver_type {
                    SolverType::Midpoint => {
                        let c_d1 = 0.5 * c_d0;
                        sample
                            .iter()
                            .zip(&x0)
                            .zip(&d1)
                            .map(|((&x, &d0), &d1)| (c_sample * x - c_d0 * d0) - c_d1 * d1)
                            .collect()
                    }
                    SolverType::Heun => {
                        let c_d1 = alpha_t * (((-h).exp() - 1.0) / h + 1.0);
                        sample
                            .iter()
                            .zip(&x0)
                            .zip(&d1)
                            .map(|((&x, &d0), &d1)| (c_sample * x - c_d0 * d0) + c_d1 * d1)
                            .collect()
                    }
                }
            }
            _ => sample.iter().zip(&x0).map(|(&x, &d0)| c_sample * x - c_d0 * d0).collect(),
        };
        self.previous_x0 = Some(x0);
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        out
    }
}
