"""`planlab profile`: show a profile as tables, write an analytic one in planlab's format,
list the analytic models and GPUs."""

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

    from planlab.commands.profile_measure import add_measure

    add_measure(ps)


def _analytic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--analytic", metavar="MODEL", help="analytic profile of MODEL (see `list`)")
    p.add_argument("--gpu", default="h200", help="GPU for --analytic (default h200)")
    p.add_argument("--dtype", default="fp8", help="weight dtype fp8|bf16 (default fp8)")
    p.add_argument("--kv-dtype", default="bf16", help="KV cache dtype fp8|bf16 (default bf16)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree (default 1)")


def _analytic(args: argparse.Namespace):
    from planner.analytic import analytic_profile

    return analytic_profile(args.analytic, args.gpu, args.dtype, args.tp, kv_dtype=args.kv_dtype)


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


def run_list(args: argparse.Namespace) -> int:
    from planner.analytic import GPUS, MODELS

    print("models (Hugging Face config.json):")
    print(
        f"  {'name':<15} {'params':>7} {'layers':>6} {'hidden':>6} {'heads':>5} {'kv':>3}  source"
    )
    for m in MODELS.values():
        print(
            f"  {m.name:<15} {m.params / 1e9:>6.2f}B {m.layers:>6} {m.hidden:>6} {m.heads:>5} "
            f"{m.kv_heads:>3}  {m.hf_id}"
        )
    print("GPUs (dense tensor-core peaks):")
    print(f"  {'name':<10} {'bf16 TF':>8} {'fp8 TF':>7} {'HBM GB/s':>9} {'HBM GiB':>8}")
    for g in GPUS.values():
        fp8 = f"{g.fp8_tflops:.0f}" if g.fp8_tflops else "-"
        print(f"  {g.name:<10} {g.bf16_tflops:>8.0f} {fp8:>7} {g.hbm_gbps:>9.0f} {g.hbm_gib:>8.1f}")
    print("dtype: fp8 | bf16 (weights); --kv-dtype fp8 | bf16; --tp N")
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
