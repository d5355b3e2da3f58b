"""`planlab profile`: show a profile as tables, write an analytic one in planlab's format,
generate one from NVIDIA AIConfigurator (`aic`, the extra planlab[aic]), list the analytic
models and GPUs."""

from __future__ import annotations

import argparse

from planner.errors import ConfigError

EXAMPLES = """examples:
  # the measured Dynamo profile (any of the three layouts, see docs/profiles.md)
  planlab profile show ../shared/profiles/h200-llama3.1-8b-fp8-tp1
  # the embedded analytic default, and a 70B on four H100s in bf16
  planlab profile show --analytic llama-3.1-8b --gpu h200
  planlab profile show --analytic llama-3.1-70b --gpu h100-sxm --dtype bf16 --tp 4
  # write an analytic profile as DIR/planlab-profile.json (usable as `model: {profile: DIR}`)
  planlab profile write --analytic qwen3-8b --gpu b200 --out profiles/qwen3-8b-b200
  # models and GPUs the analytic generator knows
  planlab profile list
  # from AIConfigurator's kernel database (pip install 'planlab[aic]'), with the serving
  # overhead fitted on a measured profile of Llama-3.1-8B FP8 on one H200
  planlab profile aic --model llama-3.1-70b --system h200_sxm --backend vllm --tp 4 \
      --quant fp8 --out profiles/70b-h200-aic
  planlab profile aic --model qwen3-30b-a3b --system b200_sxm --backend trtllm --tp 2 --ep 2 \
      --calibrate ../shared/profiles/h200-llama3.1-8b-fp8-tp1 --calibrate-model llama-3.1-8b \
      --calibrate-system h200_sxm --calibrate-quant fp8 --calibrate-tp 1 --out profiles/q30
"""

SHOW_ISLS = (500, 1000, 3000, 8000, 16000)
SHOW_CONTEXTS = (1000, 3000, 8000)
SHOW_KV = (0.1, 0.3, 0.5, 0.7, 0.9)
SHOW_ITL_MS = (10, 20, 30, 50, 100)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="show, write or list engine performance profiles",
        description="Inspect engine performance profiles: measured (Dynamo profiler output or "
        "planlab's own format) or analytic (roofline from a model config and GPU specs).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ps = p.add_subparsers(dest="profile_command", metavar="ACTION")
    ps.required = True

    show = ps.add_parser(
        "show",
        help="print a profile as tables",
        description="Print prefill TTFT and throughput at a few ISLs, decode ITL and throughput "
        "at a few contexts and KV usages, the best decode throughput at a few ITL targets, "
        "max_kv_tokens and KV bytes per token.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("path", nargs="?", metavar="PATH", help="a profile directory or file")
    _analytic_args(show)
    show.set_defaults(func=run_show)

    write = ps.add_parser(
        "write",
        help="write an analytic profile in planlab's format",
        description="Write the analytic profile as OUT/planlab-profile.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _analytic_args(write)
    write.add_argument("--out", required=True, metavar="DIR", help="output directory")
    write.set_defaults(func=run_write)

    lst = ps.add_parser("list", help="list analytic models and GPUs")
    lst.set_defaults(func=run_list)

    aic = ps.add_parser(
        "aic",
        help="generate a profile from NVIDIA AIConfigurator (extra planlab[aic])",
        description="Sample AIConfigurator's engine model (aiconfigurator-core: measured kernel "
        "data per GPU and backend) on Dynamo's profiler grid and write OUT (a new or empty "
        "directory) in Dynamo's profiler layout plus planlab-profile.json. AIConfigurator times the "
        "engine only; --calibrate fits the serving overhead it leaves out on a measured "
        "profile and adds it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    aic.add_argument(
        "--model",
        required=True,
        help="planlab's name (e.g. llama-3.1-70b) or "
        "AIConfigurator's Hugging Face id (e.g. Qwen/Qwen3-30B-A3B)",
    )
    aic.add_argument(
        "--system",
        required=True,
        help="AIConfigurator system (h200_sxm, b200_sxm, ...) or planlab's GPU name",
    )
    aic.add_argument("--backend", default="vllm", help="vllm | sglang | trtllm (default vllm)")
    aic.add_argument(
        "--backend-version",
        default="current",
        help="backend version in AIConfigurator's database (default current)",
    )
    aic.add_argument("--tp", type=int, default=1, help="tensor parallel degree (default 1)")
    aic.add_argument(
        "--ep",
        type=int,
        default=1,
        help="expert parallel degree of MoE layers, a divisor of --tp (default 1)",
    )
    aic.add_argument(
        "--quant", default=None, help="fp8 | bf16 weights (default: the checkpoint's own)"
    )
    aic.add_argument("--kv-quant", default="bf16", help="KV cache fp8 | bf16 (default bf16)")
    aic.add_argument(
        "--calibrate", metavar="PROFILE", help="a measured profile to fit the serving overhead on"
    )
    for flag, what in (("model", "model"), ("system", "system"), ("quant", "quant"), ("tp", "tp")):
        aic.add_argument(
            f"--calibrate-{flag}",
            type=int if flag == "tp" else str,
            help=f"the measured profile's {what} (default: as --{flag})",
        )
    aic.add_argument("--out", required=True, metavar="DIR", help="output directory")
    aic.set_defaults(func=run_aic)

    from planlab.commands.profile_measure import add_measure

    add_measure(ps)


def _analytic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--analytic", metavar="MODEL", help="analytic profile of MODEL (see `list`)")
    p.add_argument("--gpu", default="h200", help="GPU for --analytic (default h200)")
    p.add_argument("--dtype", default="fp8", help="weight dtype fp8|bf16 (default fp8)")
    p.add_argument("--kv-dtype", default="bf16", help="KV cache dtype fp8|bf16 (default bf16)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree (default 1)")
    p.add_argument(
        "--ep",
        type=int,
        default=1,
        help="expert parallel degree of MoE layers, a divisor of --tp (default 1)",
    )


def _analytic(args: argparse.Namespace):
    from planner.analytic import analytic_profile

    return analytic_profile(
        args.analytic, args.gpu, args.dtype, args.tp, kv_dtype=args.kv_dtype, ep=args.ep
    )


def run_show(args: argparse.Namespace) -> int:
    from planlab.profiles import load_profile

    if bool(args.path) == bool(args.analytic):
        raise ConfigError("give either PATH or --analytic MODEL (one of them)", key="profile show")
    prof = load_profile(args.path) if args.path else _analytic(args)
    print(format_profile(prof))
    return 0


def run_write(args: argparse.Namespace) -> int:
    from planlab.profiles import write_profile

    if not args.analytic:
        raise ConfigError("--analytic MODEL is required", key="profile write")
    prof = _analytic(args)
    meta = {"model": args.analytic, "gpu": args.gpu, "dtype": args.dtype, "tp": args.tp}
    target = write_profile(prof, args.out, metadata=meta)
    print(f"wrote {target} ({prof.name}, max_kv_tokens {prof.max_kv_tokens:,})")
    return 0


def run_aic(args: argparse.Namespace) -> int:
    from planlab.aic import AicEngine, aic_profile, calibrate_overhead, resolve, write_aic_profile
    from planlab.profiles import load_profile
    from planlab.results import check_out_dir

    check_out_dir(args.out, force=False, markers=(), what="profile")
    spec = resolve(
        args.model,
        args.system,
        args.backend,
        args.tp,
        ep=args.ep,
        quant=args.quant,
        kv_quant=args.kv_quant,
        backend_version=args.backend_version,
    )
    engine = AicEngine(spec)
    meta = {
        "model": spec.model,
        "gpu": spec.system,
        "dtype": spec.quant,
        "tp": spec.tp,
        "backend": spec.backend,
        "backend_version": spec.backend_version,
        "ep": spec.ep,
        "kv_dtype": spec.kv_quant,
        "source": f"aiconfigurator-core {spec.label}",
    }
    overhead = None
    if args.calibrate:
        measured = load_profile(args.calibrate)
        ref = resolve(
            args.calibrate_model or args.model,
            args.calibrate_system or args.system,
            args.backend,
            args.calibrate_tp or args.tp,
            quant=args.calibrate_quant or args.quant,
            kv_quant=args.kv_quant,
            backend_version=args.backend_version,
        )
        overhead = calibrate_overhead(measured, engine if ref == spec else AicEngine(ref))
        meta["serving_overhead"] = {
            "prefill_scale": overhead.prefill_scale,
            "prefill_ms": overhead.prefill_ms,
            "decode_scale": overhead.decode_scale,
            "decode_ms": overhead.decode_ms,
            "fitted_on": f"{args.calibrate} as {ref.label}",
        }
    prof = (
        aic_profile(spec, overhead, engine=engine) if overhead else aic_profile(spec, engine=engine)
    )
    target = write_aic_profile(prof, args.out, meta)
    print(
        f"wrote {target} ({prof.name}, max_kv_tokens {prof.max_kv_tokens:,}, "
        f"KV bytes/token {prof.kv_bytes_per_token:,.0f})"
    )
    if overhead:
        print(
            f"serving overhead: TTFT = {overhead.prefill_scale:.3f} x AIC + "
            f"{overhead.prefill_ms:.2f} ms, ITL = {overhead.decode_scale:.3f} x AIC + "
            f"{overhead.decode_ms:.2f} ms (fitted on {args.calibrate})"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from planner.analytic import GPUS, MODELS

    print("models (Hugging Face config.json):")
    print(
        f"  {'name':<15} {'params':>8} {'active':>7} {'layers':>6} {'hidden':>6} {'heads':>5} "
        f"{'kv':>3}  source"
    )
    for m in MODELS.values():
        print(
            f"  {m.name:<15} {m.params / 1e9:>7.2f}B {m.active_params / 1e9:>6.2f}B {m.layers:>6} "
            f"{m.hidden:>6} {m.heads:>5} {'MLA' if m.is_mla else m.kv_heads:>3}  {m.hf_id}"
        )
    print("GPUs (dense tensor-core peaks):")
    print(f"  {'name':<10} {'bf16 TF':>8} {'fp8 TF':>7} {'HBM GB/s':>9} {'HBM GiB':>8}")
    for g in GPUS.values():
        fp8 = f"{g.fp8_tflops:.0f}" if g.fp8_tflops else "-"
        print(f"  {g.name:<10} {g.bf16_tflops:>8.0f} {fp8:>7} {g.hbm_gbps:>9.0f} {g.hbm_gib:>8.1f}")
    print("dtype: fp8 | bf16 (weights); --kv-dtype fp8 | bf16; --tp N; --ep N (MoE)")
    return 0


def format_profile(prof) -> str:
    """The tables `profile show` prints."""
    lines = [f"profile: {prof.name}", f"source:  {prof.source}"]
    kvb = f"{prof.kv_bytes_per_token:,.0f}" if prof.kv_bytes_per_token else "unknown"
    lines.append(f"max_kv_tokens: {prof.max_kv_tokens:,}   KV bytes/token: {kvb}")
    lines.append(
        f"grid: ISL {prof.prefill_isl[0]:,.0f}..{prof.prefill_isl[-1]:,.0f}, "
        f"decode contexts {prof.decode_context.min():,.0f}..{prof.decode_context.max():,.0f}"
    )
    lines += [
        "",
        "prefill (one request, idle engine)",
        f"  {'ISL':>7} {'TTFT ms':>9} {'tok/s/GPU':>10}",
    ]
    for isl in SHOW_ISLS:
        lines.append(
            f"  {isl:>7,} {prof.prefill_ttft_ms_at(float(isl)):>9.1f} "
            f"{prof.prefill_thpt_per_gpu_at(float(isl)):>10,.0f}"
        )
    head = "".join(f"{f'kv {kv:.1f}':>17}" for kv in SHOW_KV)
    lines += ["", "decode ITL ms / output tok/s/GPU", f"  {'context':>7}{head}"]
    for ctx in SHOW_CONTEXTS:
        cells = "".join(
            f"{prof.decode_itl_ms_at(kv, float(ctx)):>8.1f} / {prof.decode_thpt_per_gpu_at(kv, float(ctx)):>6,.0f}"
            for kv in SHOW_KV
        )
        lines.append(f"  {ctx:>7,}{cells}")
    head = "".join(f"{f'ITL<={t}ms':>13}" for t in SHOW_ITL_MS)
    lines += [
        "",
        "best decode tok/s/GPU meeting the ITL target (* = target missed)",
        f"  {'context':>7}{head}",
    ]
    for ctx in SHOW_CONTEXTS:
        cells = []
        for t in SHOW_ITL_MS:
            thpt, itl, _ = prof.best_decode_point(float(t), float(ctx))
            cells.append(f"{thpt:>12,.0f}{'*' if itl > t else ' '}")
        lines.append(f"  {ctx:>7,}{''.join(cells)}")
    return "\n".join(lines)
