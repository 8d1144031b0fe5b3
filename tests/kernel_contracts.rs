//! Every WGSL kernel variant the WebGPU backend can dispatch, assembled from its fragments exactly as the
//! backend does, parsed and validated with naga — no adapter needed — and held to the contracts the host
//! relies on (src/ops/gpu/kernels/registry.rs and params.rs):
//! - each `Params` uniform struct has its Rust twin's fields, in order, with the same types, offsets and size;
//! - each kernel declares exactly the bindings the registry lists (names, numbers, access), numbered 0..n;
//! - each fragment provides the functions its contract names, with those signatures;
//! - only `shader-f16` kernels need `shader-f16`, only subgroup kernels need subgroups; the entry point fits WebGPU's default limits
//!   (≤ 256 invocations, ≤ 16 KiB of workgroup memory);
//! - every .wgsl file in the folder belongs to some kernel;
//! - every loop is a counted `for` (the backend leaves naga's loop bounding off: src/ops/gpu/recorder.rs).
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

use lambda_eclipse::ops::gpu::kernels::{Access, Binding, Kernel, ParamType, ParamsLayout, WgslType};
use naga::valid::{Capabilities, SubgroupOperationSet, ValidationFlags, Validator};
use naga::{AddressSpace, Module, Scalar, StorageAccess, TypeInner, VectorSize};

/// WebGPU's defaults (`maxComputeInvocationsPerWorkgroup`, `maxComputeWorkgroupStorageSize`).
const MAX_INVOCATIONS: u32 = 256;
const MAX_WORKGROUP_BYTES: u32 = 16384;

fn parse_and_validate(kernel: Kernel) -> Module {
    let source = kernel.source();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{kernel:?} does not parse:\n{}", e.emit_to_string(&source)));
    // What every WebGPU device offers (unpack2x16float etc.), plus f16 and subgroups only where the host asks.
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    caps.set(Capabilities::SHADER_FLOAT16, kernel.needs_shader_f16());
    caps.set(Capabilities::SUBGROUP, kernel.needs_subgroups());
    validator(caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{kernel:?} does not validate:\n{}", e.emit_to_string(&source)));
    module
}

/// A validator with `caps`; subgroup operations (basic, vote and arithmetic, which wgpu's `SUBGROUP` feature enables)
/// in compute shaders where `caps` has `SUBGROUP`.
fn validator(caps: Capabilities) -> Validator {
    let mut v = Validator::new(ValidationFlags::all(), caps);
    if caps.contains(Capabilities::SUBGROUP) {
        v.subgroup_stages(naga::valid::ShaderStages::COMPUTE).subgroup_operations(
            SubgroupOperationSet::BASIC | SubgroupOperationSet::VOTE | SubgroupOperationSet::ARITHMETIC,
        );
    }
    v
}

/// `(binding, name, access)` of every resource the module declares, by binding.
fn declared_bindings(kernel: Kernel, module: &Module) -> Vec<(u32, String, Access)> {
    let mut found: Vec<(u32, String, Access)> = module
        .global_variables
        .iter()
        .filter_map(|(_, g)| {
            let rb = g.binding.as_ref()?;
            assert_eq!(rb.group, 0, "{kernel:?}: {:?} is not in group 0", g.name);
            let access = match g.space {
                AddressSpace::Uniform => Access::Uniform,
                AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => Access::ReadWrite,
                AddressSpace::Storage { .. } => Access::Read,
                other => panic!("{kernel:?}: {:?} in unexpected address space {other:?}", g.name),
            };
            Some((rb.binding, g.name.clone().unwrap_or_default(), access))
        })
        .collect();
    found.sort_by_key(|b| b.0);
    found
}

fn wgsl_type(module: &Module, ty: naga::Handle<naga::Type>) -> Option<WgslType> {
    match module.types[ty].inner {
        TypeInner::Scalar(Scalar::U32) => Some(WgslType::U32),
        TypeInner::Scalar(Scalar::F32) => Some(WgslType::F32),
        TypeInner::Scalar(Scalar::BOOL) => Some(WgslType::Bool),
        TypeInner::Vector { size: VectorSize::Bi, scalar: Scalar::U32 } => Some(WgslType::Vec2U32),
        TypeInner::Vector { size: VectorSize::Tri, scalar: Scalar::U32 } => Some(WgslType::Vec3U32),
        TypeInner::Vector { size: VectorSize::Quad, scalar: Scalar::F32 } => Some(WgslType::Vec4F32),
        TypeInner::Struct { .. } if module.types[ty].name.as_deref() == Some("ReduceIds") => Some(WgslType::ReduceIds),
        _ => None,
    }
}

/// The `Params` struct bound at binding 0, as `(name, type, offset)` fields and its size.
fn wgsl_params(kernel: Kernel, module: &Module) -> (Vec<(String, ParamType, usize)>, usize) {
    let (_, var) = module
        .global_variables
        .iter()
        .find(|(_, g)| g.binding.as_ref().is_some_and(|b| b.binding == 0))
        .unwrap_or_else(|| panic!("{kernel:?} has no binding 0"));
    let ty = &module.types[var.ty];
    assert_eq!(ty.name.as_deref(), Some("Params"), "{kernel:?}: binding 0 should be the `Params` struct");
    let TypeInner::Struct { members, span } = &ty.inner else { panic!("{kernel:?}: Params is not a struct") };
    let fields = members
        .iter()
        .map(|m| {
            let ty = match module.types[m.ty].inner {
                TypeInner::Scalar(Scalar::U32) => ParamType::U32,
                TypeInner::Scalar(Scalar::F32) => ParamType::F32,
                ref other => {
                    panic!("{kernel:?}: Params.{:?} has type {other:?}; the host writes only u32 and f32", m.name)
                }
            };
            (m.name.clone().unwrap_or_default(), ty, m.offset as usize)
        })
        .collect();
    (fields, *span as usize)
}

fn rust_params(layout: &ParamsLayout) -> (Vec<(String, ParamType, usize)>, usize) {
    (layout.fields.iter().map(|f| (f.name.to_string(), f.ty, f.offset)).collect(), layout.size)
}

#[test]
fn every_kernel_variant_validates_and_its_params_match_the_rust_struct() {
    let kernels = Kernel::all();
    // 13 single kernels + 3 reducing ones (layer norm, group norm, softmax) × 2 reductions (workgroup memory,
    // subgroups) + the split-K reduce + the bench's FMA micro-kernel in f32 and f16 + the GEMM's 6 weight
    // readers (f32, packed f16, native f16, int8, Q8_0, Q4_0) × 3 input readers × 6 tilings (64, 128, GEMV
    // portable and with subgroups, 64 and 128 in f16).
    assert_eq!(kernels.len(), 13 + 3 * 2 + 1 + 2 + 6 * 3 * 6);
    for kernel in kernels {
        let module = parse_and_validate(kernel);
        let layout = kernel.params();
        let (wgsl, wgsl_size) = wgsl_params(kernel, &module);
        let (rust, rust_size) = rust_params(layout);
        assert_eq!(wgsl, rust, "{kernel:?}: WGSL `Params` and Rust `{}` differ (name, type, offset)", layout.rust_name);
        assert_eq!(wgsl_size, rust_size, "{kernel:?}: WGSL `Params` and Rust `{}` differ in size", layout.rust_name);
    }
}

#[test]
fn every_kernel_declares_exactly_the_bindings_its_fragments_list() {
    for kernel in Kernel::all() {
        let module = parse_and_validate(kernel);
        let listed = kernel.bindings();
        let want: Vec<_> = listed.iter().map(|b| (b.index, b.name.to_string(), b.access)).collect();
        assert_eq!(declared_bindings(kernel, &module), want, "{kernel:?}: bindings differ from the registry's");
        // The host binds params at 0 and its buffers at 1.. in order: no gaps.
        let indices: Vec<u32> = listed.iter().map(|b| b.index).collect();
        assert_eq!(indices, (0..listed.len() as u32).collect::<Vec<_>>(), "{kernel:?}: bindings are not 0..n");
        assert_eq!(listed[0], Binding { index: 0, name: "p", access: Access::Uniform }, "{kernel:?}");
    }
}

#[test]
fn every_fragment_provides_the_functions_its_contract_names() {
    for kernel in Kernel::all() {
        let module = parse_and_validate(kernel);
        for fragment in kernel.fragments() {
            for want in fragment.provides {
                let (_, f) = module
                    .functions
                    .iter()
                    .find(|(_, f)| f.name.as_deref() == Some(want.name))
                    .unwrap_or_else(|| panic!("{kernel:?}: {} should provide fn {}", fragment.file, want.name));
                let args: Vec<_> = f.arguments.iter().map(|a| wgsl_type(&module, a.ty)).collect();
                let want_args: Vec<_> = want.args.iter().map(|&t| Some(t)).collect();
                assert_eq!(args, want_args, "{kernel:?}: arguments of {} in {}", want.name, fragment.file);
                let ret = f.result.as_ref().map(|r| wgsl_type(&module, r.ty).expect("a contract type"));
                assert_eq!(ret, want.ret, "{kernel:?}: result of {} in {}", want.name, fragment.file);
            }
        }
    }
}

#[test]
fn only_shader_f16_kernels_need_it_and_every_entry_point_fits_webgpu_default_limits() {
    for kernel in Kernel::all() {
        let module = parse_and_validate(kernel);
        if kernel.needs_shader_f16() {
            let source = kernel.source();
            let without_f16 = naga::front::wgsl::parse_str(&source).ok().and_then(|m| {
                Validator::new(ValidationFlags::all(), Capabilities::SHADER_FLOAT16_IN_FLOAT32).validate(&m).ok()
            });
            assert!(without_f16.is_none(), "{kernel:?} is marked shader-f16 but does not need it");
        }
        if kernel.needs_subgroups() {
            let source = kernel.source();
            let caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
            let without = naga::front::wgsl::parse_str(&source).ok().and_then(|m| validator(caps).validate(&m).ok());
            assert!(without.is_none(), "{kernel:?} is marked subgroups but does not need them");
        }
        let [main] = &module.entry_points[..] else { panic!("{kernel:?}: expected one entry point") };
        assert_eq!((main.name.as_str(), main.stage), ("main", naga::ShaderStage::Compute), "{kernel:?}");
        let invocations: u32 = main.workgroup_size.iter().product();
        assert!(invocations <= MAX_INVOCATIONS, "{kernel:?}: {invocations} invocations per workgroup");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let shared: u32 = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == AddressSpace::WorkGroup)
            .map(|(_, g)| layouter[g.ty].size)
            .sum();
        assert!(shared <= MAX_WORKGROUP_BYTES, "{kernel:?}: {shared} bytes of workgroup memory");
    }
}

#[test]
fn every_wgsl_file_belongs_to_a_kernel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops/gpu/kernels");
    let used: std::collections::BTreeSet<&str> =
        Kernel::all().into_iter().flat_map(|k| k.fragments()).map(|f| f.file).collect();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    assert!(files.len() > 20, "found only {files:?} in {}", dir.display());
    for file in &files {
        assert!(used.contains(file.as_str()), "{file} is used by no kernel");
    }
}

/// The functions `main` calls directly (by name).
fn called_by_main(module: &Module) -> Vec<String> {
    fn walk(block: &naga::Block, module: &Module, out: &mut Vec<String>) {
        for stmt in block.iter() {
            match stmt {
                naga::Statement::Call { function, .. } => {
                    out.extend(module.functions[*function].name.clone());
                }
                naga::Statement::Block(b) => walk(b, module, out),
                naga::Statement::If { accept, reject, .. } => {
                    walk(accept, module, out);
                    walk(reject, module, out);
                }
                naga::Statement::Loop { body, continuing, .. } => {
                    walk(body, module, out);
                    walk(continuing, module, out);
                }
                naga::Statement::Switch { cases, .. } => cases.iter().for_each(|c| walk(&c.body, module, out)),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&module.entry_points[0].function.body, module, &mut out);
    out
}

/// Split-K's contract: every tiling except the GEMV (which the host never splits) takes its K range from
/// `k_range`, so a slice computes only its own K; the reduce ends through the very epilogue fragment the GEMM
/// stores through (so bias, activation and residual are the unsplit path's), with the GEMM's `Params`.
#[test]
fn split_k_tilings_honour_their_k_range_and_the_reduce_shares_the_gemms_epilogue() {
    let gemms: Vec<Kernel> = Kernel::all().into_iter().filter(|k| matches!(k, Kernel::Gemm(..))).collect();
    for &kernel in &gemms {
        let Kernel::Gemm(_, _, tile) = kernel else { unreachable!() };
        let calls = called_by_main(&parse_and_validate(kernel));
        let want = !tile.is_gemv();
        assert_eq!(calls.iter().any(|c| c == "k_range"), want, "{kernel:?}: main calls k_range: {calls:?}");
        assert!(calls.iter().any(|c| c == "store"), "{kernel:?}: main stores through the epilogue: {calls:?}");
    }
    let reduce = Kernel::GemmSplitKReduce;
    assert!(called_by_main(&parse_and_validate(reduce)).iter().any(|c| c == "store"));
    let epilogue =
        |k: Kernel| k.fragments().into_iter().find(|f| f.provides.iter().any(|p| p.name == "store")).map(|f| f.file);
    for &kernel in &gemms {
        assert_eq!(epilogue(kernel), epilogue(reduce), "{kernel:?} and the reduce end through different stores");
    }
    assert_eq!(reduce.params().rust_name, gemms[0].params().rust_name);
}

/// Every reducing kernel (layer norm, group norm, softmax, the GEMV) comes in both reductions, with the same
/// bindings and functions: only the subgroup one needs the feature, so an adapter without it (SwiftShader in
/// Chromium, any browser through wgpu today) always has the portable variant of each.
#[test]
fn reducing_kernels_and_the_gemv_have_a_portable_and_a_subgroup_variant_with_the_same_contract() {
    use lambda_eclipse::ops::gpu::kernels::Reduction;
    for make in [Kernel::LayerNorm, Kernel::GroupNorm, Kernel::SoftmaxRows] {
        let (portable, subgroup) = (make(Reduction::Workgroup), make(Reduction::Subgroup));
        assert!(!portable.needs_subgroups() && subgroup.needs_subgroups(), "{portable:?} / {subgroup:?}");
        let provided =
            |k: Kernel| -> Vec<_> { k.fragments()[0].provides.iter().map(|f| (f.name, f.args, f.ret)).collect() };
        assert_eq!(provided(portable), provided(subgroup), "{portable:?}");
        assert_eq!(portable.bindings(), subgroup.bindings(), "{portable:?}");
        for kernel in [portable, subgroup] {
            parse_and_validate(kernel);
        }
    }
    // The GEMV likewise, for every weight and input reader.
    use lambda_eclipse::ops::gpu::kernels::{GemmInput, GemmTile, GemmWeight};
    for w in GemmWeight::ALL {
        for i in GemmInput::ALL {
            let (portable, subgroup) = (Kernel::Gemm(w, i, GemmTile::Gemv), Kernel::Gemm(w, i, GemmTile::GemvSubgroup));
            assert!(!portable.needs_subgroups() && subgroup.needs_subgroups(), "{portable:?} / {subgroup:?}");
            assert_eq!(portable.bindings(), subgroup.bindings(), "{portable:?}");
            assert_eq!(portable.needs_shader_f16(), subgroup.needs_shader_f16(), "{portable:?}");
        }
    }
}

/// The backend creates its shader modules without naga's loop bounding (src/ops/gpu/recorder.rs: with it, the
/// driver cannot unroll the GEMM loops), which is sound only for shaders without infinite loops. So every loop
/// in the kernels must be a counted `for`: `for (var v = start; v < bound; v++)` or `v += step` (a positive
/// constant, or a subgroup size), or `for (var v = start; v > 0u; v /= 2u)`; no `loop` or `while` at all.
#[test]
fn every_kernel_loop_is_a_counted_for_loop_so_loop_bounding_can_be_left_off() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops/gpu/kernels");
    let mut loops = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (number, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            let words: Vec<&str> = code.split(|c: char| !c.is_alphanumeric() && c != '_').collect();
            assert!(
                !words.contains(&"loop") && !words.contains(&"while"),
                "{file}:{}: `loop` / `while`: use a counted for loop\n{line}",
                number + 1
            );
            let Some(at) = code.find("for (") else { continue };
            loops += 1;
            // Up to the `)` that closes `for (` (a bound may hold parentheses of its own).
            let mut depth = 1;
            let header: String = code[at + 5..]
                .chars()
                .take_while(|&c| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth > 0
                })
                .collect();
            let parts: Vec<&str> = header.split(';').map(str::trim).collect();
            let counted = match parts.as_slice() {
                [init, test, step] => {
                    let v = init.strip_prefix("var ").and_then(|s| s.split(" = ").next()).unwrap_or("");
                    !v.is_empty()
                        && ((test.starts_with(&format!("{v} < "))
                            && (*step == format!("{v}++") || step.starts_with(&format!("{v} += "))))
                            || (*test == format!("{v} > 0u") && *step == format!("{v} /= 2u")))
                }
                _ => false,
            };
            assert!(counted, "{file}:{}: not a counted for loop\n{line}", number + 1);
        }
    }
    assert!(loops > 40, "found only {loops} loops in {}", dir.display());
}
