//! The probe child's work, in a fresh process.

use super::code;
use llama_cpp_sys_2 as g;
use std::ffi::CString;
use std::path::Path;

/// K (columns), N (weight rows), M (activation rows): M > 1 takes ggml's
/// tiled AMX path, the one a prompt takes.
const K: i64 = 256;
const N: i64 = 64;
const M: i64 = 32;

pub fn run(library: &Path) -> Result<(), (i32, String)> {
    let setup = |m: &str| (code::SETUP, m.to_string());
    let c = CString::new(library.as_os_str().as_encoded_bytes())
        .map_err(|_| setup("bad module path"))?;
    // SAFETY (whole block): plain ggml C API calls on objects created
    // here, checked for NULL; buffers are sized by ggml itself.
    unsafe {
        let reg = g::ggml_backend_load(c.as_ptr());
        if reg.is_null() {
            return Err(setup("ggml could not load the module"));
        }
        let dev = g::ggml_backend_reg_dev_get(reg, 0);
        if dev.is_null() {
            return Err(setup("the module has no device"));
        }
        let backend = g::ggml_backend_dev_init(dev, std::ptr::null());
        if backend.is_null() {
            return Err(setup("the CPU backend did not start"));
        }
        // ggml's AMX buffer type, among the device's extra buffer types.
        let f =
            g::ggml_backend_reg_get_proc_address(reg, c"ggml_backend_dev_get_extra_bufts".as_ptr());
        if f.is_null() {
            return Err((code::NO_AMX_BUFFER, "no extra buffer types".into()));
        }
        let get: unsafe extern "C" fn(g::ggml_backend_dev_t) -> *mut g::ggml_backend_buffer_type_t =
            std::mem::transmute(f);
        let mut list = get(dev);
        let mut amx: g::ggml_backend_buffer_type_t = std::ptr::null_mut();
        while !list.is_null() && !(*list).is_null() {
            let name = super::cstr(g::ggml_backend_buft_name(*list));
            if name.contains("AMX") {
                amx = *list;
                break;
            }
            list = list.add(1);
        }
        if amx.is_null() {
            return Err((code::NO_AMX_BUFFER, "no AMX buffer type".into()));
        }

        // Deterministic data in [-1, 1).
        let mut seed: u32 = 12345;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        };
        let w: Vec<f32> = (0..N * K).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..M * K).map(|_| rnd()).collect();
        let q_size = g::ggml_row_size(g::GGML_TYPE_Q8_0, K) * N as usize;
        let mut q = vec![0u8; q_size];
        g::ggml_quantize_chunk(
            g::GGML_TYPE_Q8_0,
            w.as_ptr(),
            q.as_mut_ptr().cast(),
            0,
            N,
            K,
            std::ptr::null(),
        );

        let params = |n: usize| g::ggml_init_params {
            mem_size: g::ggml_tensor_overhead() * n + g::ggml_graph_overhead() + 1024,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // The same weights twice: in the AMX buffer and in a plain one.
        let ctx_amx = g::ggml_init(params(1));
        let ctx_cpu = g::ggml_init(params(1));
        let ctx = g::ggml_init(params(8));
        if ctx_amx.is_null() || ctx_cpu.is_null() || ctx.is_null() {
            return Err(setup("ggml_init failed"));
        }
        let wa = g::ggml_new_tensor_2d(ctx_amx, g::GGML_TYPE_Q8_0, K, N);
        let wc = g::ggml_new_tensor_2d(ctx_cpu, g::GGML_TYPE_Q8_0, K, N);
        let ba = g::ggml_backend_alloc_ctx_tensors_from_buft(ctx_amx, amx);
        let bc = g::ggml_backend_alloc_ctx_tensors_from_buft(
            ctx_cpu,
            g::ggml_backend_dev_buffer_type(dev),
        );
        if ba.is_null() || bc.is_null() {
            return Err(setup("could not allocate the weights"));
        }
        g::ggml_backend_tensor_set(wa, q.as_ptr().cast(), 0, q_size);
        g::ggml_backend_tensor_set(wc, q.as_ptr().cast(), 0, q_size);

        let xt = g::ggml_new_tensor_2d(ctx, g::GGML_TYPE_F32, K, M);
        let ya = g::ggml_mul_mat(ctx, wa, xt);
        let yc = g::ggml_mul_mat(ctx, wc, xt);
        let gf = g::ggml_new_graph(ctx);
        g::ggml_build_forward_expand(gf, ya);
        g::ggml_build_forward_expand(gf, yc);
        let bx = g::ggml_backend_alloc_ctx_tensors(ctx, backend);
        if bx.is_null() {
            return Err(setup("could not allocate the activations"));
        }
        g::ggml_backend_tensor_set(xt, x.as_ptr().cast(), 0, x.len() * 4);
        if g::ggml_backend_graph_compute(backend, gf) != g::GGML_STATUS_SUCCESS {
            return Err(setup("the graph did not compute"));
        }
        let mut ra = vec![0f32; (M * N) as usize];
        let mut rc = vec![0f32; (M * N) as usize];
        g::ggml_backend_tensor_get(ya, ra.as_mut_ptr().cast(), 0, ra.len() * 4);
        g::ggml_backend_tensor_get(yc, rc.as_mut_ptr().cast(), 0, rc.len() * 4);
        let scale = rc.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let worst = ra
            .iter()
            .zip(&rc)
            .fold(0f32, |m, (a, c)| m.max((a - c).abs()));
        if !worst.is_finite() || worst > 0.02 * scale {
            return Err((
                code::WRONG,
                format!("largest difference {worst} against {scale}"),
            ));
        }
        g::ggml_backend_buffer_free(bx);
        g::ggml_backend_buffer_free(ba);
        g::ggml_backend_buffer_free(bc);
        g::ggml_free(ctx);
        g::ggml_free(ctx_amx);
        g::ggml_free(ctx_cpu);
        g::ggml_backend_free(backend);
    }
    Ok(())
}
